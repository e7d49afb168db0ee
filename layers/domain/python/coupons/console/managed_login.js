// The admin console's sign-in through the admin pool's managed login (Cognito domain): the OAuth
// authorization code grant with PKCE (RFC 7636, S256) for a public client. The managed login
// pages do the password, the new-password step and the TOTP set-up and challenge; this page only
// starts the flow, checks that the answer belongs to a flow it started (state), and trades the
// single-use code and its verifier for the ID token at the token endpoint.

const PENDING_KEY = "coupons.console.signin"; // sessionStorage: this tab only, gone when it closes

/** The console's sign-in settings (GET /console/signin), or null when there is no managed login. */
export async function loadSettings(apiBase) {
  try {
    const response = await fetch(apiBase + "/console/signin", { cache: "no-store", credentials: "omit" });
    if (!response.ok) return null;
    const settings = await response.json();
    return settings && settings.client_id && settings.authorize_url && settings.token_url ? settings : null;
  } catch {
    return null;
  }
}

function base64url(bytes) {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

const randomText = (size) => base64url(crypto.getRandomValues(new Uint8Array(size)));

/** This page's address without query or fragment: the redirect URI registered on the client. */
export function redirectUri() {
  return location.origin + location.pathname;
}

/** Go to the managed login. The verifier and state stay in this tab until the answer comes back. */
export async function start(settings) {
  const verifier = randomText(32); // 43 characters, 256 bits
  const state = randomText(16);
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  sessionStorage.setItem(PENDING_KEY, JSON.stringify({ verifier, state, redirect: redirectUri() }));
  const query = new URLSearchParams({
    response_type: "code",
    client_id: settings.client_id,
    redirect_uri: redirectUri(),
    scope: settings.scope || "openid email profile",
    state,
    code_challenge: base64url(new Uint8Array(digest)),
    code_challenge_method: "S256",
  });
  location.assign(settings.authorize_url + "?" + query.toString());
}

/**
 * Back from the managed login (?code=…&state=… or ?error=…): {token} or {error}; null when this
 * page load is not such an answer. The code leaves the address bar at once, used or not.
 */
export async function finish(settings) {
  const params = new URLSearchParams(location.search);
  const code = params.get("code");
  const failure = params.get("error");
  if (!code && !failure) return null;
  history.replaceState(null, "", location.pathname + location.hash);
  let pending = null;
  try {
    pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) || "null");
  } catch {
    pending = null;
  }
  sessionStorage.removeItem(PENDING_KEY);
  if (failure) return { error: `Sign-in failed: ${params.get("error_description") || failure}.` };
  if (!settings || !pending || !pending.state || pending.state !== params.get("state")) {
    return { error: "Sign-in failed: that answer belongs to a sign-in that did not start here. Try again." };
  }
  const body = new URLSearchParams({
    grant_type: "authorization_code",
    client_id: settings.client_id,
    code,
    redirect_uri: pending.redirect,
    code_verifier: pending.verifier,
  });
  try {
    const response = await fetch(settings.token_url, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: body.toString(),
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok || typeof answer.id_token !== "string") {
      return { error: `Sign-in failed: ${answer.error_description || answer.error || "HTTP " + response.status}.` };
    }
    return { token: answer.id_token };
  } catch {
    return { error: "Sign-in failed: the sign-in service could not be reached." };
  }
}

/** End the managed login session too, then come back to this page signed out. */
export function signOut(settings) {
  const query = new URLSearchParams({ client_id: settings.client_id, logout_uri: redirectUri() });
  location.assign(settings.logout_url + "?" + query.toString());
}
