// Shared by the admin console and the checkout demo: DOM building, the API client,
// the signed-in token, money and time formatting, and the contract's errors as sentences.
//
// Everything rendered goes through createElement / textContent: API data (coupon metadata,
// order ids, CSV-sourced fields) is attacker-controlled and is never parsed as HTML.

/** The API's base URL: the page's own origin plus any stage prefix in front of /console. */
export const API_BASE = location.origin + location.pathname.replace(/\/console(\/.*)?$/, "");

/** Build an element. attrs: class, text, dataset-like "data-*", other attributes, and on* handlers
 * (functions only). Children: nodes or strings (strings become text nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "hidden") node.hidden = Boolean(value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace a node's content with these children. */
export function fill(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

// --- the signed-in token (sessionStorage: gone when the tab closes) ------------------------------

export class Session {
  constructor(key) {
    this.key = key;
  }

  get token() {
    return sessionStorage.getItem(this.key);
  }

  set token(value) {
    if (value) sessionStorage.setItem(this.key, value);
    else sessionStorage.removeItem(this.key);
  }

  /** The token's claims, decoded for display only (the API verifies the token, not this page). */
  get claims() {
    return decodeClaims(this.token);
  }

  /** A Cognito Hosted UI redirect (implicit grant) lands with #id_token=... in the URL. */
  takeTokenFromUrl() {
    if (!location.hash.includes("id_token=")) return false;
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get("id_token");
    history.replaceState(null, "", location.pathname + location.search);
    if (!token) return false;
    this.token = token;
    return true;
  }
}

export function decodeClaims(token) {
  if (!token) return {};
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(Array.from(atob(part), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""));
    const claims = JSON.parse(json);
    return claims && typeof claims === "object" ? claims : {};
  } catch {
    return {};
  }
}

export function groupsOf(claims) {
  const raw = claims["cognito:groups"];
  if (Array.isArray(raw)) return raw.map(String);
  if (typeof raw === "string") return raw.split(/[\s,[\]]+/).filter(Boolean);
  return [];
}

// --- the API client ------------------------------------------------------------------------------

/** Call the API. Never throws: network failures come back as status 0 with a NETWORK error. */
export async function api(method, path, { body, token, query } = {}) {
  let url = API_BASE + path;
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
    }
    const text = params.toString();
    if (text) url += "?" + text;
  }
  const headers = {};
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
  } catch {
    return { ok: false, status: 0, body: { error: { code: "NETWORK", message: "The server cannot be reached." } }, headers: new Headers() };
  }
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { error: { code: "BAD_RESPONSE", message: "The server sent something that is not JSON." } };
    }
  }
  return { ok: response.ok, status: response.status, body: data, headers: response.headers };
}

export function errorOf(result) {
  const error = result && result.body && typeof result.body === "object" ? result.body.error : null;
  if (error && typeof error === "object") {
    return {
      code: String(error.code || "UNKNOWN"),
      message: String(error.message || ""),
      details: Array.isArray(error.details) ? error.details : [],
    };
  }
  return { code: result && result.status ? "HTTP_" + result.status : "UNKNOWN", message: "", details: [] };
}

const CHANNEL_WORDS = { web: "online", mobile: "in the app", pos: "in store" };

function minutes(seconds) {
  const n = Math.max(1, Math.ceil(seconds / 60));
  return n === 1 ? "a minute" : `${n} minutes`;
}

/** Every error code of the contract (and the gateway's own) as a sentence a shopper or admin reads. */
export const ERROR_SENTENCES = {
  VALIDATION_ERROR: () => "Something in the request is not valid.",
  UNAUTHENTICATED: () => "Please sign in again: the token is missing, invalid or expired.",
  FORBIDDEN: () => "Your account is not allowed to do this.",
  COUPON_NOT_FOUND: () => "We don't recognise this code. Check it and try again.",
  REDEMPTION_NOT_FOUND: () => "We couldn't find that redemption.",
  JOB_NOT_FOUND: () => "We couldn't find that job.",
  CODE_ALREADY_EXISTS: () => "That code is already taken. Choose another one.",
  IDEMPOTENCY_CONFLICT: () => "This order id was already used with this code for a different basket. Start a new order.",
  COUPON_DISABLED: () => "This code is paused at the moment.",
  COUPON_NOT_YET_ACTIVE: () => "This code is not active yet.",
  COUPON_EXPIRED: () => "This code has expired.",
  COUPON_EXHAUSTED: () => "This code has been fully used up.",
  USER_LIMIT_REACHED: () => "You have already used this code as many times as it allows.",
  MIN_ORDER_NOT_MET: () => "Your order does not reach this code's minimum amount yet.",
  NOT_APPLICABLE: () => "None of the items in your basket are eligible for this code.",
  CHANNEL_NOT_ALLOWED: (ctx) => `This code can't be used ${CHANNEL_WORDS[ctx.channel] || "on this channel"}.`,
  DOMAIN_NOT_ALLOWED: () => "This code is reserved for customers of particular organisations (by email address).",
  CURRENCY_MISMATCH: () => "This code is for a different currency.",
  RATE_LIMITED: (ctx) => `Too many attempts. Please wait ${minutes(ctx.retryAfter || 60)} before trying again.`,
  TRY_AGAIN: () => "We're busy right now and nothing was changed. Please try again in a moment.",
  NOT_FOUND: () => "This server does not offer that feature (the route is missing).",
  METHOD_NOT_ALLOWED: () => "This server does not offer that feature (the method is not allowed).",
  INTERNAL_ERROR: () => "Something went wrong on our side. Please try again.",
  NETWORK: () => "The server cannot be reached. Check your connection.",
  BAD_RESPONSE: () => "The server sent an answer this page does not understand.",
};

/** A sentence for an API failure; for validation errors, the fields' own messages follow. */
export function sentenceFor(result, ctx = {}) {
  const error = errorOf(result);
  const retryAfter = Number(result && result.headers ? result.headers.get("Retry-After") : NaN);
  const make = ERROR_SENTENCES[error.code];
  let sentence = make ? make({ ...ctx, retryAfter: Number.isFinite(retryAfter) ? retryAfter : null })
    : error.message || `The request failed (HTTP ${result ? result.status : "?"}).`;
  if (error.code === "VALIDATION_ERROR" && error.details.length) {
    sentence += " " + error.details.map((d) => `${d.field || "request"}: ${d.message || "invalid"}`).join("; ") + ".";
  }
  return sentence;
}

// --- money and time --------------------------------------------------------------------------------

const digitsCache = new Map();

/** How many minor units a currency has (USD 2, JPY 0, KWD 3), from the browser's ICU data. */
export function minorDigits(currency) {
  if (!digitsCache.has(currency)) {
    let digits = 2;
    try {
      digits = new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
    } catch {
      digits = 2;
    }
    digitsCache.set(currency, digits);
  }
  return digitsCache.get(currency);
}

/** Integer minor units as money: formatMoney(1999, "USD") -> "$19.99". */
export function formatMoney(minor, currency) {
  if (minor === null || minor === undefined || !currency) return minor === null || minor === undefined ? "—" : String(minor);
  const digits = minorDigits(currency);
  try {
    return new Intl.NumberFormat("en", {
      style: "currency", currency, minimumFractionDigits: digits, maximumFractionDigits: digits,
    }).format(Number(minor) / 10 ** digits);
  } catch {
    return `${minor} ${currency} minor units`;
  }
}

export function formatTime(value) {
  if (!value) return "—";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toISOString().replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, " UTC");
}

export function todayUtc(offsetDays = 0) {
  const date = new Date(Date.now() + offsetDays * 86400000);
  return date.toISOString().slice(0, 10);
}

/** A fresh order id for the checkout demo. */
export function newOrderId() {
  const random = crypto.randomUUID ? crypto.randomUUID() : Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  return "order-" + random;
}

/** Only http(s) links are ever put in an href (an API value is never a javascript: URL here). */
export function safeHref(value) {
  try {
    const url = new URL(String(value), location.href);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

// --- the sign-in box --------------------------------------------------------------------------------

/**
 * Wire a sign-in form: <form> with a textarea[name=token], an error element, and a "who" element.
 * onChange(session) runs after sign-in and sign-out.
 */
export function signIn({ session, form, error, who, signOutButton, onChange, check }) {
  const show = () => {
    const claims = session.claims;
    const signedIn = Boolean(session.token);
    form.hidden = signedIn;
    signOutButton.hidden = !signedIn;
    const admin = groupsOf(claims).length ? ` (${groupsOf(claims).join(", ")})` : "";
    fill(who, signedIn ? `Signed in as ${claims.email || claims.sub || "unknown user"}${admin}` : "");
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const field = form.elements.namedItem("token");
    const token = field.value.trim().replace(/^Bearer\s+/i, "");
    fill(error, "");
    if (!token) {
      fill(error, "Paste a token first.");
      return;
    }
    const problem = check ? await check(token) : null;
    if (problem) {
      fill(error, problem);
      return;
    }
    session.token = token;
    field.value = "";
    show();
    onChange(session);
  });
  signOutButton.addEventListener("click", () => {
    session.token = null;
    show();
    onChange(session);
  });
  session.takeTokenFromUrl();
  show();
  onChange(session);
}
