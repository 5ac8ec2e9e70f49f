import KemuIP

/// The DNS wire format (RFC 1035) for what a cluster resolver answers: a header, one question,
/// and answers of type A, CNAME, PTR or SRV. Names are read with compression pointers and
/// written without them.
public struct DNSMessage: Equatable, Sendable {
    public enum RecordType: UInt16, Sendable {
        case a = 1, cname = 5, soa = 6, ptr = 12, aaaa = 28, srv = 33, opt = 41, any = 255
    }

    public enum ResponseCode: UInt8, Sendable {
        case noError = 0, formatError = 1, serverFailure = 2, nameError = 3, notImplemented = 4, refused = 5
    }

    public struct Question: Equatable, Sendable {
        /// Lower case, no trailing dot: `web.default.svc.cluster.local`.
        public var name: String
        public var type: UInt16
        public var dnsClass: UInt16 = 1

        public init(name: String, type: UInt16, dnsClass: UInt16 = 1) {
            self.name = name
            self.type = type
            self.dnsClass = dnsClass
        }
    }

    public enum RecordData: Hashable, Sendable {
        case a(IPv4Address)
        case cname(String)
        case ptr(String)
        case srv(priority: UInt16, weight: UInt16, port: UInt16, target: String)

        var type: RecordType {
            switch self {
            case .a: .a
            case .cname: .cname
            case .ptr: .ptr
            case .srv: .srv
            }
        }
    }

    public struct Record: Equatable, Sendable {
        public var name: String
        public var ttl: UInt32
        public var data: RecordData

        public init(name: String, ttl: UInt32, data: RecordData) {
            self.name = name
            self.ttl = ttl
            self.data = data
        }
    }

    public var id: UInt16
    /// QR, opcode, AA, TC, RD, RA, RCODE as in the header's second 16 bits.
    public var flags: UInt16
    public var questions: [Question]
    public var answers: [Record] = []

    public init(id: UInt16, flags: UInt16, questions: [Question], answers: [Record] = []) {
        self.id = id
        self.flags = flags
        self.questions = questions
        self.answers = answers
    }

    public var isResponse: Bool { flags & 0x8000 != 0 }
    public var opcode: UInt8 { UInt8(flags >> 11 & 0xf) }
    public var recursionDesired: Bool { flags & 0x0100 != 0 }
    public var responseCode: ResponseCode? { ResponseCode(rawValue: UInt8(flags & 0xf)) }

    public enum ParseError: Error, Equatable {
        /// Not even a header: nothing to answer.
        case tooShort
        /// A header, but the rest is broken: answer FORMERR with this id.
        case malformed(id: UInt16)
    }

    /// Reads a query: header and questions (answer, authority and additional sections, such as
    /// an EDNS OPT record, are not needed to answer and are skipped).
    public static func parse(_ bytes: [UInt8]) throws(ParseError) -> DNSMessage {
        guard bytes.count >= 12 else { throw .tooShort }
        let id = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        let flags = UInt16(bytes[2]) << 8 | UInt16(bytes[3])
        let count = Int(UInt16(bytes[4]) << 8 | UInt16(bytes[5]))
        var offset = 12
        var questions: [Question] = []
        for _ in 0..<count {
            guard let name = readName(bytes, &offset), offset + 4 <= bytes.count else { throw .malformed(id: id) }
            let type = UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
            let dnsClass = UInt16(bytes[offset + 2]) << 8 | UInt16(bytes[offset + 3])
            offset += 4
            questions.append(Question(name: name, type: type, dnsClass: dnsClass))
        }
        return DNSMessage(id: id, flags: flags, questions: questions)
    }

    /// A name at `offset` (labels, or a pointer to them), advancing past it. nil if it runs off
    /// the end, loops, or is longer than DNS allows.
    static func readName(_ bytes: [UInt8], _ offset: inout Int) -> String? {
        var labels: [String] = []
        var position = offset
        var jumped = false
        var jumps = 0
        var length = 0
        while true {
            guard position < bytes.count else { return nil }
            let size = Int(bytes[position])
            if size == 0 {
                if !jumped { offset = position + 1 }
                return labels.joined(separator: ".")
            }
            if size & 0xc0 == 0xc0 {
                guard position + 1 < bytes.count, jumps < 16 else { return nil }
                if !jumped { offset = position + 2 }
                position = (size & 0x3f) << 8 | Int(bytes[position + 1])
                jumped = true
                jumps += 1
                continue
            }
            guard size & 0xc0 == 0, position + 1 + size <= bytes.count else { return nil }
            length += size + 1
            guard length <= 255 else { return nil }
            labels.append(String(decoding: bytes[(position + 1)..<(position + 1 + size)], as: UTF8.self).lowercased())
            position += 1 + size
        }
    }

    /// The bytes of this message: header, questions, answers; no compression.
    public func bytes() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(512)
        func u16(_ v: UInt16) { out.append(UInt8(v >> 8)); out.append(UInt8(v & 0xff)) }
        func u32(_ v: UInt32) { u16(UInt16(v >> 16)); u16(UInt16(v & 0xffff)) }
        func name(_ n: String) {
            for label in n.split(separator: ".") where !label.isEmpty {
                let utf8 = Array(label.utf8.prefix(63))
                out.append(UInt8(utf8.count))
                out += utf8
            }
            out.append(0)
        }
        u16(id)
        u16(flags)
        u16(UInt16(questions.count))
        u16(UInt16(answers.count))
        u16(0)
        u16(0)
        for q in questions {
            name(q.name)
            u16(q.type)
            u16(q.dnsClass)
        }
        for r in answers {
            name(r.name)
            u16(r.data.type.rawValue)
            u16(1)
            u32(r.ttl)
            let lengthAt = out.count
            u16(0)
            switch r.data {
            case let .a(ip): out += ip.octets
            case let .cname(target), let .ptr(target): name(target)
            case let .srv(priority, weight, port, target):
                u16(priority)
                u16(weight)
                u16(port)
                name(target)
            }
            let length = out.count - lengthAt - 2
            out[lengthAt] = UInt8(length >> 8)
            out[lengthAt + 1] = UInt8(length & 0xff)
        }
        return out
    }

    /// The reply to `query`: same id and question, QR and AA set, RD copied, RA clear (kemu
    /// does not recurse), and `code`.
    public static func reply(to query: DNSMessage, code: ResponseCode, answers: [Record] = []) -> DNSMessage {
        let flags: UInt16 = 0x8000 | 0x0400 | (query.flags & 0x7800) | (query.flags & 0x0100) | UInt16(code.rawValue)
        return DNSMessage(id: query.id, flags: flags, questions: query.questions, answers: answers)
    }
}
