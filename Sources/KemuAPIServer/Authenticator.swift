import Hummingbird
import KemuPKI
import NIOCore
import NIOSSL

/// Who may call the API over https: a client certificate the cluster CA signed (the TLS handshake
/// has already refused any other), or a bearer token from the token file. Everything else is
/// anonymous and gets 401, except the health endpoints. There is no authorization layer: every
/// authenticated identity may do everything, as `system:masters` would.
public struct Authenticator: Sendable {
    /// Bearer token → identity.
    public var tokens: [String: Identity]

    public init(tokens: [String: Identity]) {
        self.tokens = tokens
    }

    /// The caller, or nil for an anonymous request.
    func identify(_ request: Request, channel: any Channel) async -> Identity? {
        let header = request.headers[.authorization]
        return await identify(token: header.flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst("Bearer ".count)) : nil }, channel: channel)
    }

    func identify(token: String?, channel: any Channel) async -> Identity? {
        if let certificate = try? await channel.nioSSL_peerCertificate().get(),
           let der = try? certificate.toDERBytes(), let identity = try? Identity(certificateDER: der) {
            return identity
        }
        return token.flatMap { tokens[$0] }
    }
}

/// Hummingbird's basic context plus the connection, whose TLS handler knows the client's
/// certificate.
public struct APIRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}
