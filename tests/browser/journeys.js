// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) clicking
// through the authd portal as people do: both seed journeys and the pages around them.
//
// Run by tests/it/portal.rs (`cargo test`), which provisions the database with the real
// authctl, starts the real authd on 127.0.0.1:0 and passes, in the environment:
//   AUTHD_URL   http://127.0.0.1:PORT          MAIL_DIR   authd's --mail-dir
//   ARTIFACTS   where screenshots go            PASSWORD   every user's first password
//   OLGA_SECRET the org admin's TOTP secret     CHROMIUM   the browser (default /usr/bin/chromium)
// authd serves passkeys for http://localhost (any port): the passkey journey opens the
// same server as http://localhost:PORT.
// Exit status 0 when every journey passed; the first failure is printed with its page.
"use strict";

const { chromium } = require("playwright-core");
const assert = require("node:assert/strict");
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const mail = require("./mail.js");

const BASE = need("AUTHD_URL");
const MAIL = need("MAIL_DIR");
const ART = need("ARTIFACTS");
const PW = need("PASSWORD");
const OLGA_SECRET = need("OLGA_SECRET");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const T = 15000; // the longest wait for any one thing

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`journeys.js: ${name} is not set (run it through cargo test)`);
    process.exit(2);
  }
  return v;
}

// ---- helpers ------------------------------------------------------------------------

let shots = 0;
async function shot(page, name) {
  shots += 1;
  const file = path.join(ART, `${String(shots).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

/** A fresh browser profile (its own --user-data-dir) with one page. */
async function browser(opts = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "authd-chromium-"));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: opts.viewport || { width: 1100, height: 900 },
    javaScriptEnabled: opts.js !== false,
    isMobile: !!opts.mobile,
    hasTouch: !!opts.mobile,
  });
  const page = ctx.pages()[0] || (await ctx.newPage());
  page.setDefaultTimeout(T);
  watch(page);
  return { ctx, page, dir };
}

async function close(b) {
  await b.ctx.close();
  fs.rmSync(b.dir, { recursive: true, force: true });
}

/** Fail on any CSP violation or script error the page reports. */
const pageErrors = [];
function watch(page) {
  page.on("console", (m) => {
    // Error pages (401, 403…) are expected answers; anything else the console reports as
    // an error (a CSP violation, a script error) fails the run.
    const expected = /Failed to load resource: the server responded with a status of 4\d\d/;
    if (m.type() === "error" && !expected.test(m.text())) {
      pageErrors.push(`${page.url()}: ${m.text()}`);
    }
  });
  page.on("pageerror", (e) => pageErrors.push(`${page.url()}: ${e.message}`));
}

async function heading(page, text) {
  await page.locator("h1", { hasText: text }).waitFor();
}

async function submit(page, selector) {
  await Promise.all([page.waitForEvent("load"), page.click(selector)]);
}

/** Accessible markup: language, viewport, one h1, every control labelled, unique ids,
 *  no horizontal scrolling on the current width. */
async function a11y(page) {
  const problems = await page.evaluate(() => {
    const out = [];
    if (!document.documentElement.lang) out.push("no lang attribute");
    if (!document.querySelector('meta[name="viewport"]')) out.push("no viewport meta");
    if (document.querySelectorAll("h1").length !== 1) out.push("not exactly one h1");
    for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
      const named = (el.labels && el.labels.length > 0) || el.getAttribute("aria-label");
      if (!named) out.push(`unlabelled control ${el.id || el.name}`);
    }
    for (const b of document.querySelectorAll("button, a")) {
      if (!b.textContent.trim() && !b.getAttribute("aria-label")) out.push("control without a name");
    }
    const ids = {};
    for (const e of document.querySelectorAll("[id]")) {
      if (ids[e.id]) out.push(`duplicate id ${e.id}`);
      ids[e.id] = true;
    }
    if (document.documentElement.scrollWidth > window.innerWidth + 1) {
      out.push(`scrolls sideways: ${document.documentElement.scrollWidth} > ${window.innerWidth}`);
    }
    return out;
  });
  assert.deepEqual(problems, [], `accessibility problems on ${page.url()}`);
}

/** The TOTP step (30 s) of now. */
const stepNow = () => Math.floor(Date.now() / 30000);

/** The code of `step` (default: now's), from oathtool. */
function totp(secret, step = stepNow()) {
  return execFileSync("oathtool", ["--totp", "-b", "-N", `@${step * 30}`, secret]).toString().trim();
}

/** A code after the `spent` step: now's, or the next step's while now's is the spent one
 * (authd accepts one step of skew). The next step's alone fails when the clock has
 * moved on a step since (a slow machine), two steps from the spent one. */
const unspentCode = (secret, spent) => totp(secret, Math.max(stepNow(), spent + 1));

const mails = () => mail.mails(MAIL);
const mailedCode = (to, before) => mail.mailedCode(MAIL, to, before, T);

/** Fill the sign-in form and send it (ticking the terms box, which every login needs). */
async function signIn(page, user, password, { terms = true, next } = {}) {
  await page.goto(`${BASE}/login${next ? `?next=${encodeURIComponent(next)}` : ""}`);
  await heading(page, "Sign in");
  await page.fill("#username", user);
  await page.fill("#password", password);
  if (terms) await page.check("#accept_terms");
  await submit(page, "#login-form button[type=submit]");
}

async function signOut(page) {
  if ((await page.locator("#sign-out").count()) === 0) await page.goto(`${BASE}/`);
  await submit(page, "#sign-out");
  await heading(page, "Sign in");
  await page.locator(".notice.info", { hasText: "You are signed out" }).waitFor();
}

async function signedInAs(page, user) {
  await heading(page, "Signed in");
  // A notice before the account page (failed attempts since the last sign-in, an expiring
  // password): it names what happened and a Continue link goes on.
  const onward = page.locator("a.button", { hasText: "Continue" });
  if ((await page.locator("#signed-in-user").count()) === 0 && (await onward.count()) > 0) {
    await submit(page, "a.button:has-text('Continue')");
    await heading(page, "Signed in");
  }
  assert.equal((await page.textContent("#signed-in-user")).trim(), user);
}

async function rules(page) {
  return page.$$eval("#checklist li", (lis) =>
    Object.fromEntries(
      lis.map((li) => {
        const met =
          li.classList.contains("met") &&
          !li.classList.contains("unmet") &&
          li.dataset.met === "true" &&
          li.querySelector(".state").textContent.includes("(met)");
        const unmet =
          li.classList.contains("unmet") &&
          li.dataset.met === "false" &&
          li.querySelector(".state").textContent.includes("(not met)");
        if (!met && !unmet) return [li.dataset.rule, "inconsistent"];
        return [li.dataset.rule, met];
      }),
    ),
  );
}

const NONE = {
  lowercase: false,
  uppercase: false,
  digit: false,
  special: false,
  min_length: false,
  max_length: false,
  no_control: false,
};

/** Type the password in groups, checking the checklist turns green rule by rule. */
async function typeWithChecklist(page, name) {
  assert.deepEqual(await rules(page), NONE, "every rule starts red");
  const steps = [
    ["a", { lowercase: true, max_length: true, no_control: true }],
    ["B", { uppercase: true }],
    ["7", { digit: true }],
    ["#", { special: true }],
    ["cdef", { min_length: true }],
  ];
  let want = { ...NONE };
  for (const [keys, turned] of steps) {
    await page.locator("#new_password").pressSequentially(keys);
    want = { ...want, ...turned };
    await page.waitForFunction(
      (w) =>
        Object.entries(w).every(
          ([id, met]) =>
            document.querySelector(`#checklist li[data-rule="${id}"]`).dataset.met === String(met),
        ),
      want,
    );
    assert.deepEqual(await rules(page), want, `after typing ${JSON.stringify(keys)}`);
    await shot(page, `${name}-checklist-${Object.keys(turned)[0]}`);
  }
  // Deleting a character takes a rule back.
  await page.locator("#new_password").press("Backspace");
  await page.waitForFunction(
    () => document.querySelector('#checklist li[data-rule="min_length"]').dataset.met === "false",
  );
  assert.equal((await rules(page)).min_length, false);
  await page.locator("#new_password").pressSequentially("fGH");
  return "aB7#cdefGH";
}

// ---- journeys -----------------------------------------------------------------------

/** Seed 000: first login → QR → confirm → recovery codes → log in again → code → in;
 *  later logins: terms page, a wrong code, a recovery code. */
async function alice(page) {
  await signIn(page, "alice", PW);
  await heading(page, "Set up two-factor authentication");
  await a11y(page);
  const svg = page.locator("svg#qr-code");
  await svg.waitFor();
  assert.ok((await svg.boundingBox()).width >= 150, "the QR code is big enough to scan");
  const secret = (await page.textContent("#totp-secret")).trim();
  assert.match(secret, /^[A-Z2-7]{16,}$/, "the secret is base32 text");
  await shot(page, "enrol-qr");

  // A wrong code first: the QR stays, with a message.
  await page.fill("#code", "000000");
  await submit(page, "#enroll-form button[type=submit]");
  await heading(page, "Set up two-factor authentication");
  await page.locator("#page-error").waitFor();
  assert.equal((await page.textContent("#totp-secret")).trim(), secret, "the same secret again");
  await shot(page, "enrol-wrong-code");

  const enrolledAt = stepNow();
  await page.fill("#code", totp(secret, enrolledAt));
  await submit(page, "#enroll-form button[type=submit]");
  await heading(page, "Your recovery codes");
  const codes = await page.$$eval("#recovery-codes code", (cs) => cs.map((c) => c.textContent.trim()));
  assert.equal(codes.length, 10);
  await a11y(page);
  await shot(page, "recovery-codes");

  // "You'll need to log into Nexus again": the code this time, not the QR.
  await submit(page, "#login-again");
  await heading(page, "Sign in");
  await page.fill("#username", "alice");
  await page.fill("#password", PW);
  await page.check("#accept_terms");
  await submit(page, "#login-form button[type=submit]");
  await heading(page, "Enter your verification code");
  await a11y(page);
  await shot(page, "totp");
  await page.fill("#code", unspentCode(secret, enrolledAt)); // the confirming step is spent
  await submit(page, "#code-form button[type=submit]");
  await signedInAs(page, "alice");
  await shot(page, "signed-in-alice");
  await signOut(page);
  await shot(page, "signed-out");

  // A wrong code, then a recovery code.
  await signIn(page, "alice", PW);
  await heading(page, "Enter your verification code");
  await page.fill("#code", "123456");
  await submit(page, "#code-form button[type=submit]");
  await page.locator("#page-error", { hasText: "Authentication attempt failed" }).waitFor();
  await shot(page, "totp-wrong");
  await page.click("#use-recovery summary");
  await page.fill("#recovery_code", codes[0]);
  await submit(page, "#use-recovery button[type=submit]");
  await signedInAs(page, "alice");
  await signOut(page);
}

/** Seed 004: emailed one-time code with "Remember this device"; resend; forget device. */
async function carol(page) {
  let before = mails();
  await signIn(page, "carol", PW);
  await heading(page, "Enter the code we emailed you");
  assert.match(await page.textContent("main"), /c•••@example\.org/);
  await a11y(page);
  await shot(page, "email-code");
  const code = await mailedCode("carol@example.org", before);
  await page.fill("#code", code);
  await page.check("#remember_device");
  await submit(page, "#code-form button[type=submit]");
  await signedInAs(page, "carol");
  assert.equal(await page.locator("#devices li").count(), 1, "one remembered device");
  await shot(page, "signed-in-remembered-device");
  await signOut(page);

  // The remembered device skips the code.
  await signIn(page, "carol", PW);
  await signedInAs(page, "carol");

  // Forget it: the code is asked again; "Send a new code" replaces the first.
  await submit(page, "#devices button[type=submit]");
  await signedInAs(page, "carol");
  await page.locator("#no-devices").waitFor();
  await page.locator(".notice.info", { hasText: "device was removed" }).waitFor();
  await shot(page, "device-forgotten");
  await signOut(page);
  before = mails();
  await signIn(page, "carol", PW);
  await heading(page, "Enter the code we emailed you");
  const first = await mailedCode("carol@example.org", before);
  before = mails();
  await submit(page, "#resend-form button[type=submit]");
  await page.locator(".notice.info", { hasText: "new code" }).waitFor();
  await shot(page, "email-resent");
  const second = await mailedCode("carol@example.org", before);
  if (first !== second) {
    await page.fill("#code", first);
    await submit(page, "#code-form button[type=submit]");
    await page.locator("#page-error").waitFor();
  }
  await page.fill("#code", second);
  await submit(page, "#code-form button[type=submit]");
  await signedInAs(page, "carol");
  await signOut(page);
}

/** Expired password: the live checklist, the mismatch message, then a new login. */
async function dave(page) {
  // Without ticking the box on the sign-in form: the terms page first.
  await signIn(page, "dave", PW, { terms: false });
  await heading(page, "Terms and conditions");
  await a11y(page);
  await shot(page, "terms");
  await page.check("#accept");
  await submit(page, "form.card button[type=submit]");
  await heading(page, "Create a new password");
  await a11y(page);
  await shot(page, "expired-password");
  const pw = await typeWithChecklist(page, "expired");

  // The mismatch message under the second box, live...
  const mismatch = page.locator("#mismatch");
  assert.equal(await mismatch.isVisible(), false);
  await page.locator("#confirm_password").pressSequentially(pw.slice(0, -1) + "X");
  await mismatch.waitFor({ state: "visible" });
  assert.equal(await page.getAttribute("#confirm_password", "aria-invalid"), "true");
  await shot(page, "expired-mismatch-live");
  await page.fill("#confirm_password", pw);
  await page.locator("#confirm_password").dispatchEvent("input");
  await mismatch.waitFor({ state: "hidden" });
  // ...and from the server when sent anyway.
  await page.fill("#confirm_password", pw + "!");
  await submit(page, "#password-form button[type=submit]");
  await heading(page, "Create a new password");
  await mismatch.waitFor({ state: "visible" });
  await shot(page, "expired-mismatch-server");

  await page.fill("#new_password", pw);
  await page.fill("#confirm_password", pw);
  await submit(page, "#password-form button[type=submit]");
  await heading(page, "Sign in");
  await page.locator(".notice.info", { hasText: "password was changed" }).waitFor();
  assert.equal(await page.inputValue("#username"), "dave", "the name is filled in");
  await shot(page, "password-changed");
  await page.fill("#password", pw);
  await page.check("#accept_terms");
  await submit(page, "#login-form button[type=submit]");
  await signedInAs(page, "dave");
  await signOut(page);
}

/** Without JavaScript: security questions, then a forgotten password reset. */
async function erin(page) {
  await signIn(page, "erin", PW);
  await signedInAs(page, "erin");
  await page.click("text=Security questions");
  await heading(page, "Security questions");
  await a11y(page);
  await page.fill("#question1", "What was the name of your first pet?");
  await page.fill("#answer1", "Fluffy");
  await page.fill("#question2", "In which city were you born?");
  await page.fill("#answer2", "Leeds");
  await shot(page, "security-questions");
  await submit(page, "#questions-form button[type=submit]");
  await page.locator(".notice.info", { hasText: "security questions were saved" }).waitFor();
  await signOut(page);

  await page.click("text=Forgot your password?");
  await heading(page, "Forgot your password?");
  await a11y(page);
  await page.fill("#username", "erin");
  await submit(page, "#forgot-form button[type=submit]");
  await heading(page, "Reset your password");
  await a11y(page);
  assert.match(await page.textContent("label[for=answer0]"), /first pet/);
  // Without the script the checklist is the list of requirements, in red.
  assert.equal((await page.$$("#checklist li.unmet")).length, 7);
  await page.fill("#answer0", "  FLUFFY ");
  await page.fill("#answer1", "leeds");
  await page.fill("#new_password", "New-Pass-2-erin");
  await page.fill("#confirm_password", "New-Pass-2-erin");
  await shot(page, "forgot-reset");
  await submit(page, "#reset-form button[type=submit]");
  await heading(page, "Sign in");
  await page.locator(".notice.info", { hasText: "password was changed" }).waitFor();
  await page.fill("#password", "New-Pass-2-erin");
  await page.check("#accept_terms");
  await submit(page, "#login-form button[type=submit]");
  await signedInAs(page, "erin");
  await signOut(page);
}

/** Issue 14: an admin's one-time link sets the password, then the security page:
 *  confirm it is you, then sign out everywhere else. */
async function sofia(page) {
  await page.goto(need("SOFIA_LINK"));
  await heading(page, "Choose a new password");
  await a11y(page);
  await page.fill("#new_password", "Sofia-New-Pass-42!");
  await page.fill("#confirm_password", "Sofia-New-Pass-42!");
  await shot(page, "reset-link");
  await submit(page, "#reset-link-form button[type=submit]");
  await heading(page, "Password changed");
  // The link works once.
  await page.goto(need("SOFIA_LINK"));
  await heading(page, "This link no longer works");
  await signIn(page, "sofia", "Sofia-New-Pass-42!");
  await signedInAs(page, "sofia");
  await submit(page, "#security-link");
  await heading(page, "Security");
  await a11y(page);
  for (const id of ["#factors", "#sessions", "#devices", "#activity"]) {
    await page.locator(id).waitFor();
  }
  assert.ok((await page.locator("#activity tr.sign_in").count()) >= 1);
  await page.fill("#password", "Sofia-New-Pass-42!");
  await submit(page, "#reauth-form button[type=submit]");
  await page.locator("#reauth-until").waitFor();
  await shot(page, "security-page");
  await submit(page, "#revoke-others");
  await page.locator(".notice.info", { hasText: "Every other session was signed out" }).waitFor();
  await signOut(page);
}

/** The forgot-password page with the script: the checklist is live there too. */
async function erinLive(page) {
  await page.goto(`${BASE}/forgot`);
  await page.fill("#username", "erin");
  await submit(page, "#forgot-form button[type=submit]");
  await heading(page, "Reset your password");
  await typeWithChecklist(page, "forgot");
}

/** The org admin: unlock a locked user, reset a user's two-factor (the seed's button). */
async function olga(page) {
  await signIn(page, "olga", PW);
  await heading(page, "Enter your verification code");
  await page.fill("#code", totp(OLGA_SECRET));
  await submit(page, "#code-form button[type=submit]");
  await signedInAs(page, "olga");
  await page.click("text=Manage users");
  await heading(page, "Users");
  await a11y(page);
  const frank = page.locator('tr[data-user="frank"]');
  assert.match(await frank.textContent(), /Locked/);
  assert.equal(await page.locator('tr[data-user="zed"]').count(), 0, "no other organisation's users");
  await shot(page, "admin-users");
  await submit(page, 'tr[data-user="frank"] button:has-text("Unlock")');
  await heading(page, "User frank");
  await page.locator(".notice.info", { hasText: "frank is unlocked" }).waitFor();
  assert.match(await page.textContent("#user-status"), /Active/);
  await shot(page, "admin-unlocked");

  await page.goto(`${BASE}/admin`);
  await submit(page, 'tr[data-user="alice"] a');
  await heading(page, "User alice");
  assert.match(await page.textContent("#user-mfa"), /Authenticator app/);
  await shot(page, "admin-user-page");
  page.once("dialog", (d) => d.accept());
  await submit(page, 'button:has-text("Reset two-factor")');
  await page.locator(".notice.info", { hasText: "was reset" }).waitFor();
  assert.match(await page.textContent("#user-mfa"), /Not set up/);
  await shot(page, "admin-reset-2fa");

  // Another organisation's user is as missing as a user that does not exist.
  await page.goto(`${BASE}/admin/user?name=zed`);
  await heading(page, "No such user");
  await signOut(page);
}

/** After the reset, alice (a new phone) is shown a new QR code at her next login. */
async function aliceAgain(page) {
  await signIn(page, "alice", PW);
  await heading(page, "Set up two-factor authentication");
  await page.locator("svg#qr-code").waitFor();
  await shot(page, "enrol-again-after-reset");
}

/** A phone-sized screen: the pages fit without sideways scrolling. */
async function phone(page) {
  await page.goto(`${BASE}/login`);
  await heading(page, "Sign in");
  await a11y(page);
  await shot(page, "phone-login");
  await page.goto(`${BASE}/forgot`);
  await a11y(page);
  await page.fill("#username", "dave");
  await submit(page, "#forgot-form button[type=submit]");
  await heading(page, "Reset your password");
  await a11y(page);
  await shot(page, "phone-reset");
}

/** paula (issue 15): passkeys with a CDP virtual authenticator (ctap2, internal, resident
 *  keys, user verification). WebAuthn needs a domain, so this journey uses localhost. */
const PK = BASE.replace("127.0.0.1", "localhost");

/** A CDP virtual authenticator on the page: a platform passkey provider (ctap2,
 *  internal transport, resident keys, user verification that succeeds). */
async function virtualAuthenticator(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return { cdp, authenticatorId };
}

/** Sign in at http://localhost:PORT (where passkeys work), ticking the terms box. */
async function pkSignIn(page, user) {
  await page.goto(`${PK}/login`);
  await heading(page, "Sign in");
  await page.fill("#username", user);
  await page.fill("#password", PW);
  await page.check("#accept_terms");
  await submit(page, "#login-form button[type=submit]");
}

async function paulaSignOut(page) {
  await page.goto(`${PK}/`);
  await submit(page, "#sign-out");
  await heading(page, "Sign in");
}

async function paula(page) {
  const { cdp, authenticatorId } = await virtualAuthenticator(page);
  // Add a passkey from the account page.
  await pkSignIn(page, "paula");
  await signedInAs(page, "paula");
  await submit(page, "#passkeys-link");
  await heading(page, "Passkeys");
  await page.locator("#no-passkeys").waitFor();
  await page.fill("#passkey-name", "work laptop");
  await submit(page, "#add-passkey button[type=submit]");
  await heading(page, "Add a passkey");
  await shot(page, "passkey-add");
  await submit(page, "#webauthn-go");
  await heading(page, "Passkeys");
  await page.locator(".notice.info", { hasText: "Your passkey was added" }).waitFor();
  assert.equal((await page.textContent("#passkey-list .passkey-name")).trim(), "work laptop");
  const creds = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  assert.equal(creds.credentials.length, 1);
  assert.equal(creds.credentials[0].isResidentCredential, true, "a discoverable passkey");
  await shot(page, "passkey-added");
  await paulaSignOut(page);

  // Password, then the passkey as the second factor.
  await pkSignIn(page, "paula");
  await heading(page, "Enter your verification code");
  await page.locator("#use-passkey").waitFor();
  await shot(page, "passkey-second-factor");
  await submit(page, "#use-passkey");
  await signedInAs(page, "paula");
  await paulaSignOut(page);

  // Passwordless: no username, no password; the terms still come after it.
  await submit(page, "#sign-in-with-passkey");
  await heading(page, "Sign in with a passkey");
  await shot(page, "passkey-passwordless");
  await submit(page, "#webauthn-go");
  await page.locator("#terms-text").waitFor();
  await page.check("#accept");
  await submit(page, "form[action$='/login/terms'] button[type=submit]");
  await signedInAs(page, "paula");
  await shot(page, "passkey-signed-in-passwordless");

  // Remove it.
  await page.goto(`${PK}/passkeys`);
  await submit(page, "#passkey-list button[aria-label^='Remove passkey']");
  await page.locator(".notice.info", { hasText: "The passkey was removed" }).waitFor();
  await page.locator("#no-passkeys").waitFor();
  await shot(page, "passkey-removed");
}

/** rita: in a group that requires a passkey (mfa.passkey_required=groups): her first
 *  login enrols a passkey, not an authenticator app; then the passkey signs her in. */
async function rita(page) {
  await virtualAuthenticator(page);
  await pkSignIn(page, "rita");
  await heading(page, "Set up a passkey");
  await a11y(page);
  await shot(page, "passkey-enrol-required");
  await submit(page, "#webauthn-go");
  await heading(page, "Your recovery codes");
  await submit(page, "#login-again");
  await heading(page, "Sign in");
  await pkSignIn(page, "rita");
  await heading(page, "Enter your verification code");
  assert.equal(await page.locator("#code-form").count(), 0, "no code form: a passkey only");
  await submit(page, "#use-passkey");
  await signedInAs(page, "rita");
}

/** pia: must use a second factor; on the authenticator-app page she picks a passkey. */
async function pia(page) {
  await virtualAuthenticator(page);
  await pkSignIn(page, "pia");
  await heading(page, "Set up two-factor authentication");
  await shot(page, "enrol-choice-passkey");
  await submit(page, "#enroll-passkey");
  await heading(page, "Set up a passkey");
  await submit(page, "#webauthn-go");
  await heading(page, "Your recovery codes");
  await submit(page, "#login-again");
  await pkSignIn(page, "pia");
  await heading(page, "Enter your verification code");
  await submit(page, "#use-passkey");
  await signedInAs(page, "pia");
}

// ---- main -----------------------------------------------------------------------------

async function main() {
  fs.mkdirSync(ART, { recursive: true });
  const results = [];
  const run = async (name, fn, opts) => {
    const b = await browser(opts);
    const started = Date.now();
    try {
      await fn(b.page);
      results.push(`ok ${name} (${Date.now() - started} ms)`);
    } catch (e) {
      console.error(`FAILED ${name}: ${e.message}`);
      try {
        await shot(b.page, `FAILED-${name}`);
      } catch (_) {
        /* the page may be gone */
      }
      const where = b.page.url();
      const text = await b.page.textContent("body").catch(() => "");
      e.message = `${name}: ${e.message}\n  at page ${where}\n  page text: ${String(text).replace(/\s+/g, " ").slice(0, 600)}`;
      throw e;
    } finally {
      await close(b);
    }
  };
  await run("phone", phone, { viewport: { width: 390, height: 844 }, mobile: true });
  await run("alice (seed 000: enrolment, TOTP, terms, recovery code)", alice);
  await run("carol (seed 004: emailed code, remember device, resend)", carol);
  await run("dave (expired password, live checklist)", dave);
  await run("erin (security questions, forgot password; no JavaScript)", erin, { js: false });
  await run("erin (forgot password checklist, with JavaScript)", erinLive);
  await run("olga (org admin: unlock, reset two-factor)", olga);
  await run("alice again (enrols anew after the reset)", aliceAgain);
  await run("paula (passkeys: add, password + passkey, passwordless, remove)", paula);
  await run("rita (a group that requires a passkey: enrols one at first login)", rita);
  await run("pia (chooses a passkey over an authenticator app at enrolment)", pia);
  await run("sofia (one-time link, security page)", sofia);
  assert.deepEqual(pageErrors, [], "no CSP violations or script errors");
  for (const r of results) console.log(r);
  console.log(`${results.length} passed, 0 failed`);
  console.log(`${shots} screenshots in ${ART}`);
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  if (pageErrors.length) console.error("page errors:\n" + pageErrors.join("\n"));
  process.exit(1);
});
