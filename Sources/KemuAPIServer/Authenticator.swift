import Foundation
import Hummingbird
import KemuPKI
import KemuStore
import NIOCore
import NIOSSL

/// Who may call the API over https: a client certificate the cluster CA signed (the TLS handshake
/// has already refused any other), a bearer token from the token file, or a ServiceAccount token
/// this server signed whose account (and pod) still exist. Everything else is anonymous and gets
/// 401, except the health endpoints. What each may do is the `Authorizer`'s.
public struct Authenticator: Sendable {
    /// Bearer token → identity.
    public var tokens: [String: Identity]
    /// ServiceAccount tokens, checked against the objects they name.
    public var serviceAccounts: (tokens: ServiceAccountTokens, store: Store)?

    public init(tokens: [String: Identity], serviceAccounts: (tokens: ServiceAccountTokens, store: Store)? = nil) {
        self.tokens = tokens
        self.serviceAccounts = serviceAccounts
    }

    /// The caller, or nil for an anonymous request.
    func identify(_ request: Request, channel: any Channel) async -> Identity? {
        let header = request.headers[.authorization]
        return await identify(token: Self.bearerToken(header), channel: channel)
    }

    /// The token of an `Authorization: Bearer TOKEN` header. The scheme's case does not matter
    /// (RFC 7235): python's kubernetes client sends `bearer`.
    static func bearerToken(_ header: String?) -> String? {
        guard let header, header.count > 7, header.prefix(7).lowercased() == "bearer " else { return nil }
        let token = header.dropFirst(7).trimmingCharacters(in: .whitespaces)
        return token.isEmpty ? nil : token
    }

    func identify(token: String?, channel: any Channel) async -> Identity? {
        if let certificate = try? await channel.nioSSL_peerCertificate().get(),
           let der = try? certificate.toDERBytes(), let identity = try? Identity(certificateDER: der) {
            return identity
        }
        guard let token else { return nil }
        if let known = tokens[token] { return known }
        return serviceAccounts.flatMap { $0.tokens.identity(token, store: $0.store) }
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
