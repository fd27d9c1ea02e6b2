// The dashboard's shell: login (admin key in sessionStorage), a hash router over the pages,
// each page a module exporting mount(container) -> cleanup function.
import { api, clearKey, getKey, setKey, setUnauthorizedHandler } from "./api.js";
import * as live from "./live.js";
import * as usage from "./usage.js";
import * as providers from "./providers.js";
import * as config from "./config.js";
import * as debug from "./debug.js";

const PAGES = { live, usage, providers, config, debug };
const main = document.getElementById("page");
const loginBox = document.getElementById("login");
const loginForm = document.getElementById("login-form");
const loginKey = document.getElementById("login-key");
const loginError = document.getElementById("login-error");
const logout = document.getElementById("logout");
let cleanup = null;
let current = null;

function showLogin(msg = "") {
  unmount();
  loginError.textContent = msg;
  loginBox.hidden = false;
  logout.hidden = true;
  loginKey.focus();
}

function unmount() {
  if (cleanup) { try { cleanup(); } catch (e) { console.error(e); } }
  cleanup = null;
  current = null;
}

function route() {
  if (!getKey()) { showLogin(); return; }
  const name = (location.hash.slice(1).split("/")[0]) || "live";
  const page = PAGES[name] || live;
  const pageName = PAGES[name] ? name : "live";
  if (current === pageName) return;
  unmount();
  current = pageName;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === pageName);
  main.replaceChildren();
  main.dataset.page = pageName;
  document.title = `Plexus · ${pageName[0].toUpperCase()}${pageName.slice(1)}`;
  cleanup = page.mount(main) || null;
}

setUnauthorizedHandler(() => { clearKey(); showLogin("The admin key was refused; log in again."); });

loginForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const key = loginKey.value.trim();
  loginError.textContent = "";
  try {
    await api("/debug", { key });
  } catch (e) {
    loginError.textContent = e.status === 401 ? "Wrong admin key." : `Cannot reach the management API: ${e.message}`;
    return;
  }
  setKey(key);
  loginKey.value = "";
  loginBox.hidden = true;
  logout.hidden = false;
  route();
});

logout.addEventListener("click", () => { clearKey(); showLogin(); });
window.addEventListener("hashchange", route);
if (getKey()) logout.hidden = false;
route();
