// The checkout demo: a basket, the coupon input, validate, and pay (redeem with a fresh order id).
import { $, api, el, fill, formatMoney, formatTime, newOrderId, sentenceFor, Session, signIn } from "./app.js";

const session = new Session("coupons.checkout.token");
const CURRENCY = "USD";
const PRODUCTS = [
  { product_id: "trail-shoes", name: "Trail running shoes", category: "shoes", unit_price: 8999, quantity: 1 },
  { product_id: "merino-socks", name: "Merino socks", category: "apparel", unit_price: 1499, quantity: 2 },
  { product_id: "water-bottle", name: "Insulated water bottle", category: "accessories", unit_price: 1999, quantity: 0 },
  { product_id: "gift-card-25", name: "Gift card", category: "gift-cards", unit_price: 2500, quantity: 0 },
];

const state = { applied: null, redemption: null, validating: 0 };

const channel = () => $("#channel").value;

function order() {
  return {
    currency: CURRENCY,
    items: PRODUCTS.filter((p) => p.quantity > 0).map(({ product_id, category, unit_price, quantity }) => ({
      product_id, category, unit_price, quantity,
    })),
  };
}

const subtotal = () => PRODUCTS.reduce((sum, p) => sum + p.unit_price * p.quantity, 0);

function renderBasket() {
  fill($("#basket tbody"), PRODUCTS.map((p) => el("tr", { "data-product": p.product_id },
    el("td", { text: p.name }),
    el("td", { class: "muted", text: p.category }),
    el("td", { class: "num", text: formatMoney(p.unit_price, CURRENCY) }),
    el("td", { class: "num" }, el("input", {
      type: "number", min: "0", max: "20", value: String(p.quantity), class: "qty", "aria-label": `Quantity of ${p.name}`,
      oninput: (event) => {
        const n = Math.max(0, Math.min(20, Math.floor(Number(event.target.value) || 0)));
        p.quantity = n;
        basketChanged();
      },
    })),
    el("td", { class: "num line", text: formatMoney(p.unit_price * p.quantity, CURRENCY) }),
  )));
}

function renderTotals() {
  const sub = subtotal();
  const applied = state.applied;
  fill($("#subtotal"), formatMoney(sub, CURRENCY));
  fill($("#discount-code"), applied ? applied.code : "");
  fill($("#discount"), applied ? "−" + formatMoney(applied.result.discount_amount, applied.result.currency) : formatMoney(0, CURRENCY));
  fill($("#total"), formatMoney(applied ? applied.result.total_after_discount : sub, CURRENCY));
  $("#pay").disabled = sub <= 0;
  for (const row of document.querySelectorAll("#basket tbody tr")) {
    const product = PRODUCTS.find((p) => p.product_id === row.dataset.product);
    fill(row.querySelector(".line"), formatMoney(product.unit_price * product.quantity, CURRENCY));
  }
}

function message(text, kind) {
  const node = $("#coupon-message");
  node.className = `message ${kind || ""}`;
  fill(node, text);
}

let revalidateTimer = null;

function basketChanged() {
  state.redemption = null;
  $("#receipt").hidden = true;
  renderTotals();
  if (state.applied) {
    clearTimeout(revalidateTimer);
    revalidateTimer = setTimeout(() => validate(state.applied.code), 250);
  }
}

async function validate(code) {
  const run = ++state.validating;
  fill($("#pay-error"));
  if (!code) {
    state.applied = null;
    message("Enter a code first.", "bad");
    renderTotals();
    return;
  }
  if (subtotal() <= 0) {
    state.applied = null;
    message("Add something to your basket first.", "bad");
    renderTotals();
    return;
  }
  message("Checking…", "");
  const result = await api("POST", "/coupons/validate", { token: session.token, body: { code, channel: channel(), order: order() } });
  if (run !== state.validating) return;
  if (!result.ok) {
    state.applied = null;
    message(sentenceFor(result, { channel: channel() }), "bad");
    renderTotals();
    return;
  }
  state.applied = { code, result: result.body };
  const r = result.body;
  message(`Code ${code} applied: you save ${formatMoney(r.discount_amount, r.currency)} · new total ${formatMoney(r.total_after_discount, r.currency)}.`, "good");
  renderTotals();
}

async function pay() {
  const button = $("#pay");
  fill($("#pay-error"));
  const sub = subtotal();
  if (sub <= 0) return;
  button.disabled = true;
  if (!state.applied) {
    showReceipt({ paid: sub, order_id: newOrderId(), redemption: null });
    button.disabled = false;
    return;
  }
  const orderId = newOrderId();
  const body = { code: state.applied.code, channel: channel(), order: order(), order_id: orderId };
  const result = await api("POST", "/redemptions", { token: session.token, body });
  button.disabled = false;
  if (!result.ok) {
    fill($("#pay-error"), "Payment stopped: " + sentenceFor(result, { channel: channel() }));
    return;
  }
  const r = result.body;
  showReceipt({ paid: sub - r.discount_amount, order_id: r.order_id, redemption: r });
  state.applied = null;
  $("#coupon-code").value = "";
  message("", "");
  renderTotals();
}

function showReceipt({ paid, order_id, redemption }) {
  state.redemption = redemption;
  $("#receipt").hidden = false;
  fill($("#receipt-paid"), formatMoney(paid, CURRENCY));
  fill($("#receipt-order"), order_id);
  fill($("#receipt-redemption"), redemption ? redemption.redemption_id : "no coupon used");
  fill($("#receipt-discount"), redemption ? formatMoney(redemption.discount_amount, redemption.currency) : formatMoney(0, CURRENCY));
  fill($("#receipt-status"), redemption ? redemption.status : "paid");
  fill($("#receipt-at"), formatTime(redemption ? redemption.redeemed_at : new Date().toISOString()));
  // No "cancel" here (issue 12): rolling a redemption back is the shop's call on a refund, made by its
  // backend or in the admin console; a shopper's token is refused (403).
}

async function checkToken(token) {
  // Any authenticated user may ask for a redemption: an unknown id is a 404, a bad token a 401.
  const result = await api("GET", "/redemptions/00000000-0000-4000-8000-000000000000", { token });
  return result.status === 401 ? "This token is not valid (or has expired)." : null;
}

function main() {
  renderBasket();
  renderTotals();
  $("#channel").addEventListener("change", basketChanged);
  $("#coupon-form").addEventListener("submit", (event) => {
    event.preventDefault();
    validate($("#coupon-code").value.trim().toUpperCase());
  });
  $("#pay").addEventListener("click", pay);
  signIn({
    session,
    form: $("#signin-form"),
    error: $("#signin-error"),
    who: $("#who"),
    signOutButton: $("#sign-out"),
    check: checkToken,
    onChange: () => {
      $("#signin").hidden = Boolean(session.token);
      $("#shop").hidden = !session.token;
    },
  });
  document.body.dataset.ready = "true";
}

main();
