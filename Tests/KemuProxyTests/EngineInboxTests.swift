import Glibc
import Testing

@testable import KemuProxy

/// The engine's inbox: what is sent wakes the engine's thread once; what is posted does not,
/// until its poster wakes it, and not when the thread took it meanwhile.
struct EngineInboxTests {
    /// Whether the eventfd would wake the engine's epoll now.
    func signalled(_ inbox: EngineInbox) -> Bool {
        var p = pollfd(fd: inbox.signal.fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) == 1
    }

    func tokens(_ commands: [EngineCommand]) -> [UInt64] {
        commands.compactMap { if case let .tunnel(.closed(token, _, _), _) = $0 { token } else { nil } }
    }

    func closed(_ token: UInt64) -> EngineCommand { .tunnel(.closed(token: token, bytesUp: 0, bytesDown: 0), at: 0) }

    @Test func sentCommandsWakeTheThreadOnceForABatch() throws {
        let inbox = try EngineInbox()
        inbox.send([closed(1)])
        #expect(signalled(inbox))
        inbox.signal.drain()
        inbox.send([closed(2)])
        #expect(!signalled(inbox), "the thread was woken for the batch already and has not taken it")
        #expect(tokens(inbox.take()) == [1, 2])
        inbox.send([closed(3)])
        #expect(signalled(inbox))
    }

    @Test func postedCommandsWaitForTheirPosterToWakeTheThread() throws {
        let inbox = try EngineInbox()
        let mark = inbox.post([closed(1)])
        inbox.post([closed(2)])
        #expect(!signalled(inbox))
        inbox.wake(unlessTakenSince: mark)
        #expect(signalled(inbox))
        inbox.signal.drain()
        inbox.wake(unlessTakenSince: mark)
        #expect(!signalled(inbox), "one wake-up for what waits")
        #expect(tokens(inbox.take()) == [1, 2])
    }

    @Test func aThreadThatTookThePostedCommandsIsNotWoken() throws {
        let inbox = try EngineInbox()
        let mark = inbox.post([closed(1)])
        #expect(tokens(inbox.take()) == [1])
        inbox.wake(unlessTakenSince: mark)
        #expect(!signalled(inbox))
        // Posted after the take: waits again, and is woken for.
        let later = inbox.post([closed(2)])
        inbox.wake(unlessTakenSince: later)
        #expect(signalled(inbox))
    }

    @Test func aSendAfterAPostWakesTheThreadForBoth() throws {
        let inbox = try EngineInbox()
        inbox.post([closed(1)])
        inbox.send([closed(2)])
        #expect(signalled(inbox))
        #expect(tokens(inbox.take()) == [1, 2])
    }
}
