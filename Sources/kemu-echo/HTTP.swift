import Glibc

// HTTP/1.1, as much as an echo server needs: one request at a time from a buffer, bounded.

struct Request {
    var method = ""
    var target = ""
    var version = ""
    var headers: [(name: String, value: String)] = []

    func header(_ name: String) -> String? { headers.first { $0.name == name }?.value }

    var path: Substring { target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "" }

    var wantsText: Bool {
        let query = target.split(separator: "?", maxSplits: 1).dropFirst().first ?? ""
        return query.split(separator: "&").contains { $0 == "format=text" } || (header("accept") ?? "").hasPrefix("text/plain")
    }

    var keepAlive: Bool {
        let connection = (header("connection") ?? "").lowercased()
        return version == "HTTP/1.1" ? !connection.contains("close") : connection.contains("keep-alive")
    }
}

enum Parsed {
    case incomplete
    case request(Request, consumed: Int)
    case bad(status: Int, reason: String)
}

let maxHead = 64 * 1024
let maxBody = 8 * 1024 * 1024

func find(_ needle: [UInt8], in bytes: [UInt8], from: Int = 0) -> Int? {
    guard from >= 0, bytes.count >= needle.count + from else { return nil }
    var i = from
    search: while i + needle.count <= bytes.count {
        for j in 0..<needle.count where bytes[i + j] != needle[j] {
            i += 1
            continue search
        }
        return i
    }
    return nil
}

/// One request from the front of `buffer` (head, then a Content-Length or chunked body, which the
/// answer does not use but must be read past to keep the connection in step).
func parseRequest(_ buffer: [UInt8]) -> Parsed {
    guard let end = find([13, 10, 13, 10], in: buffer) else {
        return buffer.count > maxHead ? .bad(status: 431, reason: "Request Header Fields Too Large") : .incomplete
    }
    guard end <= maxHead else { return .bad(status: 431, reason: "Request Header Fields Too Large") }
    let lines = String(decoding: buffer[..<end], as: UTF8.self).split(separator: "\r\n", omittingEmptySubsequences: false)
    let start = lines.first?.split(separator: " ", omittingEmptySubsequences: true) ?? []
    guard start.count == 3, start[2].hasPrefix("HTTP/1."), start[1].hasPrefix("/") || start[1] == "*" else {
        return .bad(status: 400, reason: "Bad Request")
    }
    var request = Request(method: String(start[0]), target: String(start[1]), version: String(start[2]))
    for line in lines.dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { return .bad(status: 400, reason: "Bad Request") }
        let name = line[..<colon].lowercased()
        let value = line[line.index(after: colon)...].drop { $0 == " " || $0 == "\t" }
        request.headers.append((name, String(value.reversed().drop { $0 == " " || $0 == "\t" }.reversed())))
    }
    var consumed = end + 4
    if (request.header("transfer-encoding") ?? "").lowercased().contains("chunked") {
        // size CRLF data CRLF … 0 CRLF (trailers) CRLF
        while true {
            guard let lineEnd = find([13, 10], in: buffer, from: consumed) else { return buffer.count - consumed > maxBody ? .bad(status: 413, reason: "Payload Too Large") : .incomplete }
            let sizeText = String(decoding: buffer[consumed..<lineEnd], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingSpaces, radix: 16), size >= 0, size <= maxBody else { return .bad(status: 400, reason: "Bad Request") }
            consumed = lineEnd + 2
            if size == 0 {
                guard let trailerEnd = find([13, 10, 13, 10], in: buffer, from: consumed - 2) else { return .incomplete }
                consumed = trailerEnd + 4
                break
            }
            guard buffer.count >= consumed + size + 2 else { return .incomplete }
            consumed += size + 2
            if consumed - end > maxBody { return .bad(status: 413, reason: "Payload Too Large") }
        }
    } else if let lengthText = request.header("content-length") {
        guard let length = Int(lengthText), length >= 0 else { return .bad(status: 400, reason: "Bad Request") }
        guard length <= maxBody else { return .bad(status: 413, reason: "Payload Too Large") }
        guard buffer.count >= consumed + length else { return .incomplete }
        consumed += length
    }
    return .request(request, consumed: consumed)
}

extension Substring {
    var trimmingSpaces: String { String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed()) }
}

func escape(_ s: String) -> String {
    var out = ""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out
}

let reasons = [200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large", 431: "Request Header Fields Too Large",
               500: "Internal Server Error", 503: "Service Unavailable"]

func response(_ status: Int, _ contentType: String, _ body: String, keepAlive: Bool) -> [UInt8] {
    let bytes = Array(body.utf8)
    var head = "HTTP/1.1 \(status) \(reasons[status] ?? "Status")\r\nContent-Type: \(contentType)\r\nContent-Length: \(bytes.count)\r\nServer: kemu-echo\r\n"
    head += keepAlive ? "\r\n" : "Connection: close\r\n\r\n"
    return Array(head.utf8) + bytes
}

struct Identity {
    let pod = environment("POD_NAME"), namespace = environment("POD_NAMESPACE"), podIP = environment("POD_IP"), node = environment("NODE_NAME")

    func answer(_ request: Request, client: String, keepAlive: Bool) -> [UInt8] {
        if request.wantsText {
            let text = "pod=\(pod) namespace=\(namespace) ip=\(podIP) node=\(node) client=\(client) \(request.method) \(request.target)\n"
            return response(200, "text/plain; charset=utf-8", text, keepAlive: keepAlive)
        }
        let fields = [("pod", pod), ("namespace", namespace), ("podIP", podIP), ("node", node), ("client", client),
                      ("method", request.method), ("path", request.target)]
        let headers = request.headers.map { "\"\(escape($0.name))\":\"\(escape($0.value))\"" }.joined(separator: ",")
        let body = "{" + fields.map { "\"\($0.0)\":\"\(escape($0.1))\"" }.joined(separator: ",") + ",\"headers\":{\(headers)}}\n"
        return response(200, "application/json", body, keepAlive: keepAlive)
    }
}
