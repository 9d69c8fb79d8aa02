//! Credential, JWT, database and lookup configs that must be rejected, each with the exact
//! error text a user would see (`file:line:column: message`, every error reported). The
//! matcher, action and structure cases are in `rejected.rs`.

mod support;

/// (what is wrong, the config, every error line expected, in order).
const CASES: &[(&str, &str, &[&str])] = &[
    (
        "lookup on an unknown database",
        r##"[databases.main]
url = "sqlite://keys.db"
[default]
deny = {}
[[rules]]
name = "r"
allow = {}
lookup = { database = "mian", query = "SELECT 1 WHERE k = $1", params = [{ header = "x-k" }] }
"##,
        &[r##"policy.toml:8:23: unknown database `mian`; declared: main"##],
    ),
    (
        "lookup without any database",
        r##"[default]
deny = {}
[[rules]]
name = "r"
allow = {}
lookup = { database = "main", query = "SELECT 1" }
"##,
        &[
            r##"policy.toml:6:23: unknown database `main`; no `[databases.<name>]` table is declared"##,
        ],
    ),
    (
        "claims template without a jwt credential, db template without a lookup",
        r##"[default]
deny = {}
[[rules]]
name = "r"
allow = { request_headers = [{ name = "x-u", value = "user {{claims.sub}}" }, { name = "x-p", value = "{{ db.plan }}" }] }
"##,
        &[
            r##"policy.toml:5:60: template variable `claims.sub` needs a `jwt` credential in the same rule (claims exist only after a token is verified)"##,
            r##"policy.toml:5:104: template variable `db.plan` needs a `lookup` in the same rule (and is not available in `on_missing`/`on_db_error`)"##,
        ],
    ),
    (
        "claims in the default",
        r##"[default]
deny = { body = "{{claims.sub}}" }
"##,
        &[
            r##"policy.toml:2:18: template variable `claims.sub` needs a `jwt` credential in the same rule (claims exist only after a token is verified)"##,
        ],
    ),
    (
        "bad hex hash",
        r##"[default]
deny = {}
[[rules]]
name = "r"
allow = {}
credential = { from = { header = "x-api-key" }, api_keys = { sha256 = ["HHHH", "sk-live-plaintext"] } }
"##,
        &[
            r##"policy.toml:6:72: `sha256` entry 1 is not a SHA-256 hex digest (64 hex digits); store the key's hash, not the key"##,
            r##"policy.toml:6:80: `sha256` entry 2 is not a SHA-256 hex digest (64 hex digits); store the key's hash, not the key"##,
        ],
    ),
    (
        "two credential kinds",
        r##"[default]
deny = {}
[[rules]]
name = "r"
allow = {}
[rules.credential]
from = { header = "authorization", scheme = "Bearer" }
bearer = { sha256 = ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"] }
jwt = { algorithms = ["HS256"], secret = "s" }
"##,
        &[
            r##"policy.toml:6:1: a credential takes at most one of `api_keys`, `bearer`, `jwt`; found 2 (`bearer`, `jwt`)"##,
        ],
    ),
    (
        "two credential sources",
        r##"[default]
deny = {}
[[rules]]
name = "r"
allow = {}
credential = { from = { header = "a", cookie = "b" }, api_keys = { sha256 = ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"] } }
"##,
        &[
            r##"policy.toml:6:23: credential `from` needs exactly one of `header`, `query`, `cookie`; found 2 (`header`, `cookie`)"##,
        ],
    ),
    (
        "jwt algorithm errors",
        r##"[default]
deny = {}
[[rules]]
name = "r"
allow = {}
credential = { from = { header = "authorization", scheme = "Bearer" }, jwt = { algorithms = ["RS256", "none"], secret = "s" } }
"##,
        &[
            r##"policy.toml:6:103: unknown JWT algorithm `none`; supported: HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"##,
        ],
    ),
    (
        "an RSA algorithm with a secret, and no key at all",
        r##"[default]
deny = {}
[[rules]]
name = "r"
allow = {}
credential = { from = { header = "authorization", scheme = "Bearer" }, jwt = { algorithms = ["RS256"], secret = "s" } }
[[rules]]
name = "s"
allow = {}
credential = { from = { header = "authorization", scheme = "Bearer" }, jwt = { algorithms = ["ES256"] } }
"##,
        &[
            r##"policy.toml:6:94: algorithm RS256 does not fit a `secret` (HMAC) key; use `public_key_pem` or a JWKS"##,
            r##"policy.toml:10:78: jwt needs exactly one of `secret`, `public_key_pem`, `jwks_file`, `jwks_url`; found none"##,
        ],
    ),
    (
        "claims condition in when and without jwt, db condition without lookup",
        r##"[default]
deny = {}
[[rules]]
name = "r"
allow = {}
when = { claims = [{ name = "sub", exact = "a" }] }
[[rules]]
name = "s"
allow = {}
require = { claims = [{ name = "sub", exact = "a" }], db = [{ column = "plan", exact = "pro" }] }
"##,
        &[
            r##"policy.toml:6:20: `claims` conditions belong in `[rules.require]`: `when` is checked before the credential and lookup"##,
            r##"policy.toml:10:23: `claims` conditions need a `jwt` credential in the same rule"##,
            r##"policy.toml:10:61: `db` conditions need a `lookup` in the same rule"##,
        ],
    ),
    (
        "placeholders, params and lookup settings",
        r##"[databases.main]
url = "mysql://x"
pool_size = 0
[default]
deny = {}
[[rules]]
name = "r"
allow = {}
[rules.lookup]
database = "main"
query = "SELECT 1 WHERE a = $1 AND b = $3"
params = [{ header = "x-a" }, { claim = "sub" }, { credential = "raw" }]
timeout_ms = 0
on_error = "fail_open"
"##,
        &[
            r##"policy.toml:2:7: database url must start with `sqlite:` or `postgres://` (or `postgresql://`)"##,
            r##"policy.toml:3:13: pool_size 0 is out of range 1..=1024"##,
            r##"policy.toml:11:9: `query` never uses `$2` (parameter 2 of 3)"##,
            r##"policy.toml:12:41: a `claim` parameter needs a `jwt` credential in the same rule"##,
            r##"policy.toml:12:65: a `credential` parameter needs a `[rules.credential]` in the same rule"##,
            r##"policy.toml:13:14: timeout_ms 0 is out of range 1..=60000"##,
            r##"policy.toml:14:12: `on_error` must be "fail_closed" or { serve_stale_seconds = N }, not `fail_open`"##,
        ],
    ),
    (
        "a credential nothing checks",
        r##"[default]
deny = {}
[[rules]]
name = "r"
allow = {}
credential = { from = { header = "x-api-key" } }
"##,
        &[
            r##"policy.toml:6:14: a credential without `api_keys`, `bearer` or `jwt` must be checked by a `[rules.lookup]` with a `{ credential = ... }` parameter"##,
        ],
    ),
];

#[test]
fn every_bad_auth_config_is_rejected_with_the_exact_text() {
    support::assert_rejected(CASES);
}
