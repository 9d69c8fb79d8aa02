//! Config texts more than one crate's suites run. They are plain TOML (no types of ours), so they
//! live here; builders that need our protobuf or config types stay in each crate's test support.

use std::net::SocketAddr;

/// A gateway config whose every version shows in what the backend sees: route `openai` rewrites
/// `/openai` to `/v{version}` and goes to backend `a` (even versions) or `b` (odd), behind a
/// gateway-level gRPC ext_authz policy to `authz` (timeout 2 s). Used by the gateway's reload
/// suite and the e2e reload storm.
pub fn versioned_gateway(
    a: SocketAddr,
    b: SocketAddr,
    authz: SocketAddr,
    version: usize,
) -> String {
    let backend = if version.is_multiple_of(2) { "a" } else { "b" };
    format!(
        r#"
[[listeners]]
name = "gw"
address = "127.0.0.1:0"

[[backends]]
name = "a"
url = "http://{a}"

[[backends]]
name = "b"
url = "http://{b}"

[[routes]]
name = "openai"
path = {{ prefix = "/openai" }}
backend = "{backend}"
rewrite_prefix = "/v{version}"

[[authz_backends]]
name = "authz"
url = "http://{authz}"

[[policies]]
name = "gateway-ext-auth-policy"
target_refs = [{{ kind = "Gateway", name = "gw" }}]
ext_auth = {{ backend = "authz", grpc = {{}}, timeout = "2s" }}
"#
    )
}
