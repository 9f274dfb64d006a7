// Two rights (docs/security.md): *publish* — this page's own camera session — and *operate* —
// the sessions view (every session, other people's cameras).
//
// The publish token, when the server sets RTC_AUTH_TOKEN: open the page as /#token=<token>.
// The operator token (RTC_OPERATOR_TOKEN): /#operator=<token>, or typed into the sessions
// view, which keeps it for this tab only (sessionStorage). A fragment never leaves the
// browser (not in requests, not in logs). On a loopback-only server without an operator
// token, the publish token (or none) is enough to operate, as before.

const OPERATOR_KEY = "rtc-yolo-operator-token";

function fragment(name) {
  return new URLSearchParams(location.hash.slice(1)).get(name);
}

export function bearerToken() {
  return fragment("token");
}

export function authHeaders() {
  const token = bearerToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export function operatorToken() {
  return fragment("operator") || sessionStorage.getItem(OPERATOR_KEY);
}

export function setOperatorToken(token) {
  if (token) sessionStorage.setItem(OPERATOR_KEY, token);
  else sessionStorage.removeItem(OPERATOR_KEY);
}

/** For the operator routes: the operator token, else the publish token (loopback-only servers). */
export function operatorHeaders() {
  const token = operatorToken() || bearerToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** A session token from /offer's answer: this page's own session, nothing else. */
export function sessionHeaders(sessionToken) {
  return sessionToken ? { Authorization: `Bearer ${sessionToken}` } : {};
}
