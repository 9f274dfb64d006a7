// The bearer token the page sends when the server sets RTC_AUTH_TOKEN: open the page as
// /#token=<token>. The fragment never leaves the browser (not in requests, not in logs).

export function bearerToken() {
  return new URLSearchParams(location.hash.slice(1)).get("token");
}

export function authHeaders() {
  const token = bearerToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}
