// The admin console: coupons (list, filter, page, create, edit, pause/resume, delete, details,
// redemptions, rollback), code generation jobs, and the report summary with charts.
import {
  $, $$, API_BASE, api, el, errorOf, fill, formatMoney, formatTime, groupsOf, safeHref, sentenceFor, Session,
  signIn, todayUtc,
} from "./app.js";
import { barList, columnChart } from "./chart.js";
import * as managedLogin from "./managed_login.js";

const session = new Session("coupons.console.token");
const ADMIN_GROUP = "coupon-admins";
const LIVE_REFRESH_MS = 4000;
const CHART_MAX_DAYS = 92;

// --- API calls with the signed-in token -------------------------------------------------------------

async function call(method, path, options = {}) {
  const result = await api(method, path, { ...options, token: session.token });
  if (result.status === 401) {
    session.token = null;
    showSignedOut("Your session ended (the token is invalid or expired). Sign in again.");
  }
  return result;
}

async function checkToken(token) {
  const result = await api("GET", "/coupons", { token, query: { limit: 1 } });
  if (result.ok) return null;
  if (result.status === 401) return "This token is not valid (or has expired).";
  if (result.status === 403) return `This token is valid, but its user is not in the ${ADMIN_GROUP} group.`;
  return sentenceFor(result);
}

// --- sign-in and tabs -------------------------------------------------------------------------------

function showSignedOut(message) {
  $("#signin").hidden = false;
  $("#signin-form").hidden = false;
  $("#tabs").hidden = true;
  $("#sign-out").hidden = true;
  fill($("#who"), "");
  for (const view of $$(".view")) view.hidden = true;
  fill($("#signin-error"), message || "");
  stopLiveRefresh();
}

function onSession() {
  if (!session.token) {
    showSignedOut();
    return;
  }
  $("#signin").hidden = true;
  $("#tabs").hidden = false;
  const groups = groupsOf(session.claims);
  if (groups.length && !groups.includes(ADMIN_GROUP)) fill($("#who"), $("#who").textContent + " · not an admin");
  showTab(location.hash === "#reports" ? "reports" : location.hash === "#generate" ? "generate" : "coupons");
}

function showTab(name) {
  for (const button of $$("#tabs button")) {
    if (button.dataset.tab === name) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  for (const view of $$(".view")) view.hidden = view.id !== `view-${name}`;
  if (name === "coupons" && !listState.loaded) loadList();
  if (name === "reports" && !reportState.loaded) {
    setRange(6);
    loadReport();
  }
  history.replaceState(null, "", name === "coupons" ? location.pathname : `#${name}`);
}

// --- formatting ---------------------------------------------------------------------------------------

function badge(status) {
  const label = status === "disabled" ? "paused" : status;
  return el("span", { class: `badge status-${status}`, text: label, title: status });
}

function discountText(c) {
  if (c.discount_type === "PERCENT") {
    const cap = c.max_discount_amount ? ` (max ${formatMoney(c.max_discount_amount, c.currency || "USD")})` : "";
    return `${c.discount_value}%${cap}`;
  }
  return formatMoney(c.discount_value, c.currency);
}

function usageText(c) {
  return c.max_uses ? `${c.redeemed_count} / ${c.max_uses}` : `${c.redeemed_count} / ∞`;
}

const listOrDash = (values) => (values && values.length ? values.join(", ") : "—");
const orDash = (value) => (value === null || value === undefined || value === "" ? "—" : String(value));

// --- coupon list --------------------------------------------------------------------------------------

const listState = { loaded: false, filters: {}, cursors: [null], page: 0, next: null, run: 0 };
const MAX_EMPTY_HOPS = 20;

function readFilters() {
  const form = $("#filters");
  const data = new FormData(form);
  const filters = {};
  for (const key of ["status", "campaign_id", "code", "limit"]) {
    const value = String(data.get(key) || "").trim();
    if (value) filters[key] = value;
  }
  return filters;
}

async function loadList() {
  listState.loaded = true;
  const run = ++listState.run;
  let cursor = listState.cursors[listState.page];
  fill($("#list-status"), "Loading…");
  fill($("#list-error"), "");
  let result;
  let items = [];
  // A filtered page may come back empty with a cursor (the filter thinned it out): follow on.
  for (let hop = 0; hop < MAX_EMPTY_HOPS; hop++) {
    result = await call("GET", "/coupons", { query: { ...listState.filters, cursor } });
    if (run !== listState.run) return;
    if (!result.ok) break;
    items = Array.isArray(result.body.items) ? result.body.items : [];
    if (items.length || !result.body.next_cursor) break;
    cursor = result.body.next_cursor;
  }
  fill($("#list-status"), "");
  if (!result.ok) {
    fill($("#list-error"), sentenceFor(result));
    return;
  }
  listState.cursors[listState.page] = cursor;
  listState.next = result.body.next_cursor || null;
  renderList(items);
  $("#prev-page").disabled = listState.page === 0;
  $("#next-page").disabled = !listState.next;
  fill($("#page-info"), `Page ${listState.page + 1} · ${items.length} shown`);
}

function renderList(items) {
  const body = $("#coupon-table tbody");
  if (!items.length) {
    fill(body, el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No coupons match these filters." })));
    return;
  }
  fill(body, items.map(listRow));
}

function listRow(c) {
  return el("tr", { "data-id": c.id, class: detailState.coupon && detailState.coupon.id === c.id ? "selected" : "" },
    el("td", {}, el("button", { type: "button", class: "link code", onclick: () => openCoupon(c.id) }, c.code)),
    el("td", {}, badge(c.status)),
    el("td", { text: discountText(c) }),
    el("td", { text: orDash(c.campaign_id) }),
    el("td", { class: "nowrap", text: usageText(c) }),
    el("td", { class: "nowrap", text: formatTime(c.expires_at).slice(0, 10), title: formatTime(c.expires_at) }),
  );
}

/** Keep a listed coupon's row in step with what the details just showed. */
function updateListRow(c) {
  for (const row of $$("#coupon-table tbody tr")) {
    if (row.dataset.id === c.id) row.replaceWith(listRow(c));
  }
}

function wireList() {
  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    listState.filters = readFilters();
    listState.cursors = [null];
    listState.page = 0;
    loadList();
  });
  $("#filters").addEventListener("reset", () => {
    setTimeout(() => $("#filters").requestSubmit(), 0);
  });
  $("#next-page").addEventListener("click", () => {
    if (!listState.next) return;
    listState.cursors[listState.page + 1] = listState.next;
    listState.page += 1;
    loadList();
  });
  $("#prev-page").addEventListener("click", () => {
    if (listState.page === 0) return;
    listState.page -= 1;
    loadList();
  });
  $("#new-coupon").addEventListener("click", () => openForm(null));
  $("#page-size").addEventListener("change", () => $("#filters").requestSubmit());
}

// --- coupon details, usage and redemptions -----------------------------------------------------------

const detailState = { coupon: null, redemptionsCursor: null, timer: null };

function showPane(which) {
  $("#detail-empty").hidden = which !== "empty";
  $("#detail").hidden = which !== "detail";
  $("#coupon-form").hidden = which !== "form";
  if (which !== "detail") stopLiveRefresh();
}

async function openCoupon(id) {
  fill($("#detail-error"), "");
  const result = await call("GET", `/coupons/${encodeURIComponent(id)}`);
  if (!result.ok) {
    showPane("detail");
    fill($("#detail-error"), sentenceFor(result));
    return;
  }
  renderDetail(result.body);
  showPane("detail");
  updateListRow(result.body);
  for (const row of $$("#coupon-table tbody tr")) row.classList.toggle("selected", row.dataset.id === id);
  await loadRedemptions(true);
  startLiveRefresh();
}

function renderDetail(coupon) {
  let c = coupon;
  // Usage statistics come with GET /coupons/{id} only; an edit's answer keeps the last ones seen.
  if (!c.usage && detailState.coupon && detailState.coupon.id === c.id) c = { ...c, usage: detailState.coupon.usage };
  detailState.coupon = c;
  fill($("#detail-code"), c.code);
  fill($("#detail-status"), badge(c.status));
  fill($("#toggle-coupon"), c.status === "disabled" ? "Resume" : "Pause");
  $("#delete-confirm").hidden = true;
  $("#delete-coupon").hidden = false;
  renderUsage(c);
  const facts = [
    ["Discount", discountText(c)],
    ["Currency", orDash(c.currency)],
    ["Min order", c.min_order_amount ? formatMoney(c.min_order_amount, c.currency || "USD") : "—"],
    ["Valid from", formatTime(c.starts_at)],
    ["Expires", formatTime(c.expires_at)],
    ["Uses per user", c.uses_per_user ? String(c.uses_per_user) : "unlimited"],
    ["Channels", listOrDash(c.channels)],
    ["Campaign", orDash(c.campaign_id)],
    ["Applicable products", listOrDash(c.applicable_products)],
    ["Applicable categories", listOrDash(c.applicable_categories)],
    ["Excluded products", listOrDash(c.excluded_products)],
    ["Excluded categories", listOrDash(c.excluded_categories)],
    ["Allowed domains", listOrDash(c.allowed_domains)],
    ["Id", c.id],
    ["Created", formatTime(c.created_at)],
    ["Updated", formatTime(c.updated_at)],
  ];
  fill($("#detail-fields"), facts.flatMap(([label, value]) => [el("dt", { text: label }), el("dd", { text: value })]));
  const entries = Object.entries(c.metadata && typeof c.metadata === "object" ? c.metadata : {});
  fill($("#detail-metadata tbody"), entries.length
    ? entries.map(([key, value]) => el("tr", {},
      el("th", { text: key }),
      el("td", { class: "pre", text: typeof value === "string" ? value : JSON.stringify(value) })))
    : el("tr", {}, el("td", { class: "muted", text: "No metadata." })));
}

function renderUsage(c) {
  fill($("#usage-redeemed"), String(c.redeemed_count));
  fill($("#usage-remaining"), c.remaining_uses === null || c.remaining_uses === undefined ? "unlimited" : String(c.remaining_uses));
  fill($("#usage-limit"), c.max_uses ? String(c.max_uses) : "none");
  const usage = c.usage && typeof c.usage === "object" ? c.usage : {};
  const share = typeof usage.utilisation === "number" ? usage.utilisation : null;
  fill($("#usage-utilisation"), share === null ? (c.max_uses ? "—" : "no cap") : `${Math.round(share * 1000) / 10}%`);
  fill($("#usage-last"), usage.last_redeemed_at ? formatTime(usage.last_redeemed_at) : "never");
  const bar = $("#usage-bar");
  bar.max = c.max_uses || Math.max(1, c.redeemed_count);
  bar.value = c.max_uses ? c.redeemed_count : 0;
}

async function loadRedemptions(reset) {
  const coupon = detailState.coupon;
  if (!coupon) return;
  if (reset) detailState.redemptionsCursor = null;
  fill($("#redemptions-error"), "");
  const result = await call("GET", `/coupons/${encodeURIComponent(coupon.id)}/redemptions`,
    { query: { limit: 20, cursor: detailState.redemptionsCursor } });
  const body = $("#redemptions tbody");
  if (reset) fill(body);
  if (!result.ok) {
    fill($("#redemptions-error"), sentenceFor(result));
    $("#more-redemptions").hidden = true;
    return;
  }
  const items = Array.isArray(result.body.items) ? result.body.items : [];
  for (const r of items) body.append(redemptionRow(r));
  if (reset && !items.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No redemptions yet." })));
  detailState.redemptionsCursor = result.body.next_cursor || null;
  $("#more-redemptions").hidden = !detailState.redemptionsCursor;
}

function redemptionRow(r) {
  const action = r.status === "redeemed"
    ? el("button", { type: "button", class: "small", onclick: (event) => rollback(r, event.currentTarget) }, "Roll back")
    : null;
  return el("tr", { "data-redemption": r.redemption_id },
    el("td", { text: r.user_id }),
    el("td", { class: "code", text: r.order_id }),
    el("td", { text: orDash(r.channel) }),
    el("td", { text: formatMoney(r.discount_amount, r.currency) }),
    el("td", { class: "when", text: formatTime(r.redeemed_at).replace(" UTC", ""), title: r.redeemed_at }),
    el("td", { class: "when" },
      el("span", { class: `badge status-${r.status}`, text: r.status === "rolled_back" ? "rolled back" : r.status,
        title: r.rolled_back_at ? `rolled back ${formatTime(r.rolled_back_at)}` : "" }),
      action ? " " : null, action));
}

async function rollback(redemption, button) {
  button.disabled = true;
  const result = await call("POST", `/redemptions/${encodeURIComponent(redemption.redemption_id)}/rollback`, { body: {} });
  if (!result.ok) {
    button.disabled = false;
    fill($("#redemptions-error"), sentenceFor(result));
    return;
  }
  await refreshCoupon(true);
}

async function refreshCoupon(withRedemptions) {
  const coupon = detailState.coupon;
  if (!coupon) return;
  const result = await call("GET", `/coupons/${encodeURIComponent(coupon.id)}`);
  if (!result.ok) {
    fill($("#detail-error"), sentenceFor(result));
    stopLiveRefresh();
    return;
  }
  const current = detailState.coupon;
  if (!current || current.id !== result.body.id) return; // another coupon was opened meanwhile
  const changed = result.body.updated_at !== current.updated_at || result.body.redeemed_count !== current.redeemed_count
    || result.body.status !== current.status;
  if (!changed && !withRedemptions) return;
  renderDetail(result.body);
  updateListRow(result.body);
  await loadRedemptions(true);
}

// The details of an open coupon follow its counters while the page is visible.
function startLiveRefresh() {
  stopLiveRefresh();
  detailState.timer = setInterval(() => {
    if (document.visibilityState === "visible" && !$("#detail").hidden) refreshCoupon(false);
  }, LIVE_REFRESH_MS);
}

function stopLiveRefresh() {
  if (detailState.timer) clearInterval(detailState.timer);
  detailState.timer = null;
}

function wireDetail() {
  $("#refresh-coupon").addEventListener("click", () => refreshCoupon(true));
  $("#more-redemptions").addEventListener("click", () => loadRedemptions(false));
  $("#edit-coupon").addEventListener("click", () => openForm(detailState.coupon));
  $("#toggle-coupon").addEventListener("click", async () => {
    const c = detailState.coupon;
    const status = c.status === "disabled" ? "active" : "disabled";
    const result = await call("PUT", `/coupons/${encodeURIComponent(c.id)}`, { body: { status } });
    if (!result.ok) {
      fill($("#detail-error"), sentenceFor(result));
      return;
    }
    fill($("#detail-error"), "");
    renderDetail(result.body);
    updateListRow(result.body);
  });
  $("#delete-coupon").addEventListener("click", () => {
    $("#delete-coupon").hidden = true;
    $("#delete-confirm").hidden = false;
  });
  $("#delete-no").addEventListener("click", () => {
    $("#delete-coupon").hidden = false;
    $("#delete-confirm").hidden = true;
  });
  $("#delete-yes").addEventListener("click", async () => {
    const c = detailState.coupon;
    const result = await call("DELETE", `/coupons/${encodeURIComponent(c.id)}`);
    if (!result.ok) {
      fill($("#detail-error"), sentenceFor(result));
      return;
    }
    detailState.coupon = null;
    showPane("empty");
    fill($("#detail-empty"), `Deleted ${c.code}. Its redemption history stays.`);
    loadList();
  });
}

// --- the create / edit form ------------------------------------------------------------------------

const FORM_FIELDS = {
  code: "text", campaign_id: "text", discount_type: "text", discount_value: "number", currency: "text",
  max_discount_amount: "number", min_order_amount: "number", max_uses: "number", uses_per_user: "number",
  starts_at: "text", expires_at: "text", channels: "channels", applicable_products: "list",
  applicable_categories: "list", excluded_products: "list", excluded_categories: "list",
  allowed_domains: "list", metadata: "json",
};

const formState = { original: null, prefilled: {} };

/** The raw text of a field as the user left it (what we compare to decide what changed). */
function rawValue(form, name) {
  if (FORM_FIELDS[name] === "channels") {
    return $$('input[name="channels"]', form).filter((box) => box.checked).map((box) => box.value).join(",");
  }
  return String(form.elements.namedItem(name).value).trim();
}

/** Parse one field. Unparseable numbers go to the API as typed, so its error names the field. */
function parseField(kind, raw) {
  switch (kind) {
    case "number": {
      if (raw === "") return { value: null };
      const n = Number(raw);
      return { value: Number.isFinite(n) ? n : raw };
    }
    case "list":
      return { value: raw.split(",").map((s) => s.trim()).filter(Boolean) };
    case "channels":
      return { value: raw ? raw.split(",") : [] };
    case "json": {
      if (raw === "") return { value: null };
      try {
        const parsed = JSON.parse(raw);
        if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) return { error: "must be a JSON object, e.g. {\"note\": \"…\"}" };
        return { value: parsed };
      } catch {
        return { error: "is not valid JSON" };
      }
    }
    default:
      return { value: raw === "" ? null : raw };
  }
}

function prefillText(kind, value) {
  if (value === null || value === undefined) return "";
  if (kind === "list") return value.join(", ");
  if (kind === "json") return Object.keys(value).length ? JSON.stringify(value, null, 2) : "";
  return String(value);
}

function openForm(coupon) {
  const form = $("#coupon-form");
  form.reset();
  clearErrors(form);
  formState.original = coupon;
  formState.prefilled = {};
  fill($("#form-title"), coupon ? `Edit ${coupon.code}` : "New coupon");
  fill($("#save-coupon"), coupon ? "Save changes" : "Create");
  if (coupon) {
    for (const [name, kind] of Object.entries(FORM_FIELDS)) {
      if (kind === "channels") {
        for (const box of $$('input[name="channels"]', form)) box.checked = coupon.channels.includes(box.value);
      } else {
        form.elements.namedItem(name).value = prefillText(kind, coupon[name]);
      }
      formState.prefilled[name] = rawValue(form, name);
    }
  }
  showPane("form");
  form.elements.namedItem(coupon ? "discount_value" : "code").focus();
}

function clearErrors(form) {
  for (const span of $$(".field-error", form)) fill(span);
  for (const label of $$(".invalid", form)) label.classList.remove("invalid");
  for (const box of $$(".error", form)) fill(box);
}

/** Put each `error.details[]` entry next to its field; what matches no field goes to the form's box. */
function showFieldErrors(form, details, fallback) {
  const unmatched = [];
  for (const detail of details) {
    const path = String(detail.field || "").replace(/^template\./, "");
    const name = path.split(".")[0];
    const span = $(`[data-error-for="${CSS.escape(name)}"]`, form);
    if (!span) {
      unmatched.push(`${detail.field || "request"}: ${detail.message || "invalid"}`);
      continue;
    }
    addText(span, (span.textContent ? "; " : "") + (detail.message || "invalid"));
    const holder = span.closest("[data-field]");
    if (holder) holder.classList.add("invalid");
  }
  const box = $(".error", form);
  fill(box, [fallback, ...unmatched].filter(Boolean).join(" "));
}

function addText(node, text) {
  node.textContent += text;
}

async function saveCoupon(event) {
  event.preventDefault();
  const form = $("#coupon-form");
  clearErrors(form);
  const original = formState.original;
  const body = {};
  const clientErrors = [];
  for (const [name, kind] of Object.entries(FORM_FIELDS)) {
    const raw = rawValue(form, name);
    if (original && raw === formState.prefilled[name]) continue; // unchanged: a partial update
    const parsed = parseField(kind, raw);
    if (parsed.error) {
      clientErrors.push({ field: name, message: parsed.error });
      continue;
    }
    const value = parsed.value;
    if (!original) {
      if (value === null || (kind === "list" && !value.length)) continue;
      if (kind === "channels" && value.length === 3) continue; // the default: every channel
    }
    body[name] = value;
  }
  if (clientErrors.length) {
    showFieldErrors(form, clientErrors, "Please correct the highlighted fields.");
    return;
  }
  if (original && !Object.keys(body).length) {
    fill($("#form-error"), "Nothing changed.");
    return;
  }
  const button = $("#save-coupon");
  button.disabled = true;
  const result = original
    ? await call("PUT", `/coupons/${encodeURIComponent(original.id)}`, { body })
    : await call("POST", "/coupons", { body });
  button.disabled = false;
  if (!result.ok) {
    const error = errorOf(result);
    if (error.code === "CODE_ALREADY_EXISTS") {
      showFieldErrors(form, [{ field: "code", message: "already taken" }], sentenceFor(result));
    } else if (error.details.length) {
      showFieldErrors(form, error.details, "Please correct the highlighted fields.");
    } else {
      fill($("#form-error"), sentenceFor(result));
    }
    return;
  }
  renderDetail(result.body);
  showPane("detail");
  await loadRedemptions(true);
  startLiveRefresh();
  loadList();
}

function wireForm() {
  $("#coupon-form").addEventListener("submit", saveCoupon);
  $("#cancel-form").addEventListener("click", () => {
    showPane(detailState.coupon ? "detail" : "empty");
    if (detailState.coupon) startLiveRefresh();
  });
}

// --- code generation jobs -------------------------------------------------------------------------

const jobState = { id: null, timer: null };
const TERMINAL = new Set(["succeeded", "failed"]);

async function startJob(event) {
  event.preventDefault();
  const form = $("#generate-form");
  clearErrors(form);
  const campaign = rawValue(form, "campaign_id");
  if (!campaign) {
    showFieldErrors(form, [{ field: "campaign_id", message: "required" }], "Please correct the highlighted fields.");
    return;
  }
  const template = {};
  for (const name of ["discount_type", "discount_value", "currency", "uses_per_user", "expires_at"]) {
    const parsed = parseField(FORM_FIELDS[name], rawValue(form, name));
    if (parsed.value !== null) template[name] = parsed.value;
  }
  const body = { count: parseField("number", rawValue(form, "count")).value, template };
  const pattern = rawValue(form, "pattern");
  if (pattern) body.pattern = pattern;
  const button = $("#start-job");
  button.disabled = true;
  const result = await call("POST", `/campaigns/${encodeURIComponent(campaign)}/codes`, { body });
  button.disabled = false;
  if (!result.ok) {
    const error = errorOf(result);
    showFieldErrors(form, error.details, error.details.length ? "Please correct the highlighted fields." : sentenceFor(result));
    return;
  }
  followJob(result.body.job_id);
}

function followJob(jobId) {
  if (jobState.timer) clearTimeout(jobState.timer);
  jobState.id = jobId;
  $("#job-empty").hidden = true;
  $("#job").hidden = false;
  fill($("#job-id"), jobId);
  fill($("#job-status"), badge("queued"));
  fill($("#job-export"));
  fill($("#job-result"));
  fill($("#job-error"));
  const progress = $("#job-progress");
  progress.max = 1;
  progress.value = 0;
  pollJob(jobId);
}

async function pollJob(jobId) {
  if (jobState.id !== jobId) return;
  const result = await call("GET", `/jobs/${encodeURIComponent(jobId)}`);
  if (jobState.id !== jobId) return;
  if (!result.ok) {
    fill($("#job-error"), sentenceFor(result));
    if (result.status >= 500 || result.status === 0) jobState.timer = setTimeout(() => pollJob(jobId), 2000);
    return;
  }
  fill($("#job-error"));
  renderJob(result.body);
  if (!TERMINAL.has(result.body.status)) jobState.timer = setTimeout(() => pollJob(jobId), 700);
}

function renderJob(job) {
  fill($("#job-status"), badge(job.status));
  const total = Number(job.total) || 0;
  const processed = Number(job.processed) || 0;
  const progress = $("#job-progress");
  progress.max = Math.max(1, total);
  progress.value = job.status === "succeeded" ? progress.max : Math.min(processed, progress.max);
  fill($("#job-counts"), `${processed.toLocaleString("en")} of ${total.toLocaleString("en")} processed · ${Number(job.failed || 0).toLocaleString("en")} failed`);
  const result = job.result && typeof job.result === "object" ? job.result : {};
  fill($("#job-result"), Object.entries(result)
    .filter(([key]) => key !== "export_url")
    .flatMap(([key, value]) => [el("dt", { text: key }), el("dd", { text: typeof value === "string" ? value : JSON.stringify(value) })]));
  if (job.status === "failed") fill($("#job-error"), `The job failed${result.error ? ": " + result.error : "."}`);
  const href = job.status === "succeeded" ? safeHref(result.export_url) : null;
  fill($("#job-export"), href
    ? el("a", { href, id: "export-link", class: "button primary", rel: "noopener noreferrer", target: "_blank", download: "" }, "Download the codes (CSV)")
    : job.status === "succeeded" ? "Finished; this job has no export." : "");
}

// --- reports --------------------------------------------------------------------------------------

const reportState = { loaded: false, run: 0 };

function setRange(daysBack) {
  const form = $("#report-form");
  form.elements.namedItem("from").value = todayUtc(-daysBack);
  form.elements.namedItem("to").value = todayUtc(0);
}

function daysBetween(first, last) {
  const out = [];
  const end = Date.parse(last + "T00:00:00Z");
  for (let t = Date.parse(first + "T00:00:00Z"); t <= end && out.length < 400; t += 86400000) {
    out.push(new Date(t).toISOString().slice(0, 10));
  }
  return out;
}

async function mapLimited(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

function moneyList(totals) {
  const entries = Object.entries(totals || {});
  return entries.length ? entries.map(([currency, amount]) => formatMoney(amount, currency)).join(" · ") : formatMoney(0, "USD");
}

async function loadReport(event) {
  if (event) event.preventDefault();
  reportState.loaded = true;
  const run = ++reportState.run;
  const form = $("#report-form");
  const from = form.elements.namedItem("from").value;
  const to = form.elements.namedItem("to").value;
  fill($("#report-error"));
  fill($("#report-status"), "Loading…");
  const total = await call("GET", "/reports/summary", { query: { from, to } });
  if (run !== reportState.run) return;
  if (!total.ok) {
    fill($("#report-status"));
    fill($("#report-error"), sentenceFor(total));
    return;
  }
  const summary = total.body;
  $("#report").hidden = false;
  fill($("#report-redemptions"), String(summary.redemptions));
  fill($("#report-rollbacks"), String(summary.rollbacks));
  fill($("#report-discount"), moneyList(summary.discount_totals));
  fill($("#report-failed"), String(summary.failed_attempts));
  const suspicious = Array.isArray(summary.suspicious) ? summary.suspicious : [];
  fill($("#report-suspicious-count"), String(suspicious.length));
  renderChannels(summary);
  renderTopCoupons(summary);
  fill($("#report-suspicious"), suspicious.length
    ? suspicious.slice(0, 50).map((entry) => el("li", { class: "pre", text: typeof entry === "string" ? entry : JSON.stringify(entry) }))
    : el("li", { class: "muted", text: "Nothing suspicious in this range." }));

  const days = daysBetween(from, to);
  const currencies = Object.entries(summary.discount_totals || {}).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
  const currency = currencies.length ? currencies[0][0] : "USD";
  if (days.length > CHART_MAX_DAYS) {
    fill($("#chart-days"));
    fill($("#chart-discount"));
    fill($("#chart-note"), `The per-day charts cover ranges of up to ${CHART_MAX_DAYS} days; the totals above cover the whole range.`);
    fill($("#report-status"));
    return;
  }
  fill($("#chart-note"), currencies.length > 1 ? `Discount per day is shown in ${currency}, the range's largest currency.` : "");
  const perDay = await mapLimited(days, 4, (day) => call("GET", "/reports/summary", { query: { from: day, to: day } }));
  if (run !== reportState.run) return;
  fill($("#report-status"));
  const failedDay = perDay.find((r) => !r.ok);
  if (failedDay) {
    fill($("#report-error"), sentenceFor(failedDay));
    return;
  }
  const bodies = perDay.map((r) => r.body);
  fill($("#chart-days"), columnChart({
    title: "Redemptions and rollbacks per day",
    labels: days,
    series: [
      { name: "redemptions", values: bodies.map((b) => b.redemptions), className: "series-a" },
      { name: "rollbacks", values: bodies.map((b) => b.rollbacks), className: "series-b" },
    ],
    format: (n) => String(Math.round(n)),
  }));
  fill($("#chart-discount"), columnChart({
    title: `Discount given per day (${currency}, net)`,
    labels: days,
    series: [{ name: `discount ${currency}`, values: bodies.map((b) => (b.discount_totals || {})[currency] || 0), className: "series-c" }],
    format: (n) => formatMoney(Math.round(n), currency),
  }));
}

function renderChannels(summary) {
  const channels = Object.entries(summary.by_channel || {});
  fill($("#report-channels tbody"), channels.map(([name, t]) => el("tr", {},
    el("th", { text: name }),
    el("td", { text: String(t.redemptions) }),
    el("td", { text: String(t.rollbacks) }),
    el("td", { text: moneyList(t.discount_totals) }))));
  fill($("#chart-channels"), barList({
    title: "Redemptions by channel",
    entries: channels.map(([name, t]) => ({ label: name, value: t.redemptions, note: moneyList(t.discount_totals) })),
  }));
}

function renderTopCoupons(summary) {
  const rows = Array.isArray(summary.by_coupon) ? summary.by_coupon.slice(0, 20) : [];
  fill($("#report-coupons tbody"), rows.length
    ? rows.map((t) => el("tr", {},
      el("td", {}, el("button", { type: "button", class: "link code", onclick: () => { showTab("coupons"); openCoupon(t.coupon_id); } }, t.coupon_id)),
      el("td", { text: orDash(t.campaign_id) }),
      el("td", { text: String(t.redemptions) }),
      el("td", { text: String(t.rollbacks) }),
      el("td", { text: moneyList(t.discount_totals) })))
    : el("tr", {}, el("td", { colspan: 5, class: "muted", text: "No redemptions in this range." })));
}

function wireReports() {
  $("#report-form").addEventListener("submit", loadReport);
  for (const button of $$("[data-range]", $("#report-form"))) {
    button.addEventListener("click", () => {
      setRange(Number(button.dataset.range));
      loadReport();
    });
  }
}

// --- start ------------------------------------------------------------------------------------------

/** The admin pool's managed login (AWS): the button, and the answer when this load is one. */
async function wireManagedLogin() {
  const settings = await managedLogin.loadSettings(API_BASE);
  if (settings) {
    $("#signin-managed").hidden = false;
    $("#signin-managed").addEventListener("click", () => managedLogin.start(settings));
    // After the console's own sign-out, end the managed login session too.
    $("#sign-out").addEventListener("click", () => {
      session.token = null;
      managedLogin.signOut(settings);
    });
  }
  const answer = await managedLogin.finish(settings);
  if (!answer) return null;
  if (answer.error) return answer.error;
  const problem = await checkToken(answer.token);
  if (problem) return problem;
  session.token = answer.token;
  return null;
}

async function main() {
  for (const button of $$("#tabs button")) button.addEventListener("click", () => showTab(button.dataset.tab));
  wireList();
  wireDetail();
  wireForm();
  $("#generate-form").addEventListener("submit", startJob);
  wireReports();
  const signInProblem = await wireManagedLogin();
  signIn({
    session,
    form: $("#signin-form"),
    error: $("#signin-error"),
    who: $("#who"),
    signOutButton: $("#sign-out"),
    check: checkToken,
    onChange: () => {
      listState.loaded = false;
      reportState.loaded = false;
      onSession();
    },
  });
  if (signInProblem) fill($("#signin-error"), signInProblem);
  document.body.dataset.ready = "true";
}

main();
