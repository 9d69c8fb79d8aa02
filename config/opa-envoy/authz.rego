# Role-based access in the style of OPA-Envoy's documentation: the caller's roles come from the
# bearer JWT in the `authorization` header, and each role grants methods on path patterns
# (data.json). Runs unchanged under OPA-Envoy with `path: envoy/authz/allow`.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

# The verified token's claims; undefined when the token is missing, badly signed or expired.
claims := payload if {
	[scheme, encoded] := split(http_request.headers.authorization, " ")
	lower(scheme) == "bearer"
	[valid, _, payload] := io.jwt.decode_verify(encoded, {
		"secret": data.jwt.secret,
		"iss": data.jwt.issuer,
		"alg": "HS256",
	})
	valid
}

# The request path without its query, as OPA-Envoy parsed it.
path := concat("/", array.concat([""], input.parsed_path))

allow if {
	some role in claims.roles
	some grant in data.grants[role]
	http_request.method in grant.methods
	glob.match(grant.path, ["/"], path)
}
