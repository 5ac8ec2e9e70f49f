// kemu-echo: the program behind the image kemu/echo, kept small on purpose. A cluster runs
// hundreds of these; as `kemu echo` (kemu's own 120 MB binary, its whole command tree and SwiftNIO)
// each start cost the machine the binary's relocations and conformance scans and ~3 MB of private
// memory. This one uses nothing but the C library: one thread, poll(2), an HTTP/1.1 server that
// says who answered and what it was asked, and a raw TCP port that echoes bytes back.
//
// Everything it reads comes from outside (arguments, sockets): no trapping conversion, every
// length checked, every buffer bounded.
import Glibc

// A parent may have blocked signals (Foundation's Process passes its thread's mask on): SIGTERM
// must reach this program whoever started it.
var none = sigset_t()
sigemptyset(&none)
sigprocmask(SIG_SETMASK, &none, nil)
signal(SIGPIPE, SIG_IGN)
// SIGTERM/SIGINT: nothing to drain but open connections; a clean exit, as kemu's own servers make.
signal(SIGTERM) { _ in _exit(0) }
signal(SIGINT) { _ in _exit(0) }
EchoServer(parse(Array(CommandLine.arguments.dropFirst()))).run()
