# OPA-Envoy's "additional controls" example, written by us from its documentation: the decision
# is an object (query data.envoy.authz.result) with headers for the upstream request, headers to
# remove, headers for the client, a status and body for denials, and dynamic metadata.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

allow if http_request.headers["x-user"] == "alice"

headers["x-ext-auth-allow"] := "yes"

headers["x-validated-by"] := "security-checkpoint"

request_headers_to_remove := ["one-auth-header", "another-auth-header"]

response_headers_to_add["x-response"] := ["a", "b"]

query_parameters_to_set["tenant"] := "acme"

query_parameters_to_remove := ["debug"]

status_code := 200 if allow

else := 401 if not http_request.headers["x-user"]

else := 403

body := "Authentication Failed" if status_code == 401

body := "Unauthorized Request" if status_code == 403

dynamic_metadata := {"user": object.get(http_request.headers, "x-user", ""), "checks": 2}

result["allowed"] := allow

result["headers"] := headers

result["request_headers_to_remove"] := request_headers_to_remove

result["response_headers_to_add"] := response_headers_to_add

result["query_parameters_to_set"] := query_parameters_to_set

result["query_parameters_to_remove"] := query_parameters_to_remove

result["body"] := body

result["http_status"] := status_code

result["dynamic_metadata"] := dynamic_metadata
