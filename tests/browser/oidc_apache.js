// Headless Chromium signing in to a page that Apache's mod_auth_openidc protects with
// authd as the OpenID Connect provider (issue 17): both seed journeys.
//   alice (seed 000): first sign-in enrols TOTP (QR page, code, recovery codes), signs in
//     again with a code, and ends on the protected page as alice without opening the app
//     again (the login pages carry the app's authorization request through enrolment);
//   carol (seed 004): the emailed code with "Remember this device" ends on the protected
//     page as carol; signed out everywhere, the remembered device skips the code.
// Run by tests/it/oidc.rs, which starts authd, Apache and passes, in the environment:
//   AUTHD_URL, APP_URL (Apache's http://127.0.0.1:PORT), MAIL_DIR, PASSWORD, CHROMIUM.
// Prints one line `page USER: {…}` per protected page reached; exit 0 when both passed.
"use strict";

const { chromium } = require("playwright-core");
const { execFileSync } = require("node:child_process");
const mail = require("./mail.js");

const env = (n) => {
  if (!process.env[n]) {
    console.error(`oidc_apache.js: ${n} is not set (run it through cargo test)`);
    process.exit(2);
  }
  return process.env[n];
};
const AUTHD = env("AUTHD_URL");
const APP = env("APP_URL");
const MAIL = env("MAIL_DIR");
const PW = env("PASSWORD");
const T = 15000;

/** The TOTP step (30 s) of now. */
const stepNow = () => Math.floor(Date.now() / 30000);
/** The code of `step`, from oathtool. */
const totp = (secret, step) =>
  execFileSync("oathtool", ["--totp", "-b", "-N", `@${step * 30}`, secret]).toString().trim();
/** A code after the `spent` step: now's, or the next step's while now's is the spent one
 * (authd accepts one step of skew; the next step's alone fails once the clock has moved
 * on a step since, on a slow machine). */
const unspentCode = (secret, spent) => totp(secret, Math.max(stepNow(), spent + 1));
const mails = () => mail.mails(MAIL);
const mailedCode = (to, before) => mail.mailedCode(MAIL, to, before, T);

async function submit(page, selector) {
  await Promise.all([page.waitForNavigation(), page.click(selector)]);
}

async function signIn(page, user) {
  await page.waitForSelector("#username");
  await page.fill("#username", user);
  await page.fill("#password", PW);
  await submit(page, "#login-form button[type=submit]");
}

/** The protected page's claims, once the browser is back on it. */
async function protectedPage(page, user) {
  await page.waitForURL((u) => u.toString().startsWith(`${APP}/protected/`), { timeout: T });
  await page.waitForSelector("#user");
  const seen = {};
  for (const id of ["user", "email", "groups", "amr", "acr"]) {
    seen[id] = (await page.textContent(`#${id}`)).trim();
  }
  console.log(`page ${user}: ${JSON.stringify(seen)}`);
}

async function alice(page) {
  await page.goto(`${APP}/protected/index.shtml`);
  await signIn(page, "alice");
  await page.waitForSelector("#totp-secret");
  const secret = (await page.textContent("#totp-secret")).trim();
  const enrolledAt = stepNow();
  await page.fill("#code", totp(secret, enrolledAt));
  await submit(page, "#enroll-form button[type=submit]");
  await page.waitForSelector("#recovery-codes");
  // "Sign in again" keeps the app's pending authorization request as the way on.
  const again = new URL(await page.getAttribute("#login-again", "href"), AUTHD);
  if (!(again.searchParams.get("next") || "").startsWith("/oidc/authorize?")) {
    throw new Error(`"Sign in again" lost the authorization request: ${again}`);
  }
  await submit(page, "#login-again");
  await signIn(page, "alice");
  await page.fill("#code", unspentCode(secret, enrolledAt)); // the confirming step is spent
  await submit(page, "#code-form button[type=submit]");
  // The app's authorization request survived the enrolment: straight back to the app
  // (after our form post: the portal's form-action must not block the way back).
  await protectedPage(page, "alice");
}

async function carol(page, context) {
  let before = mails();
  await page.goto(`${APP}/protected/index.shtml`);
  await signIn(page, "carol");
  const code = await mailedCode("carol@example.org", before);
  await page.fill("#code", code);
  await page.check("#remember_device");
  await submit(page, "#code-form button[type=submit]");
  await protectedPage(page, "carol");
  // Signed out of authd and of the app (their cookies gone), the remembered device
  // stays: the password alone signs carol in again.
  const keep = (await context.cookies()).filter((c) => c.name === "authd_device");
  await context.clearCookies();
  await context.addCookies(keep);
  before = mails();
  await page.goto(`${APP}/protected/index.shtml`);
  await signIn(page, "carol");
  await protectedPage(page, "carol (remembered device)");
  // No code (a security notice of the journeys before, delivered late, is no code).
  if (mail.newCodes(MAIL, "carol@example.org", before).length !== 0) {
    throw new Error("a code was mailed despite the device");
  }
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
  });
  let failed = 0;
  for (const [name, journey] of [["alice", alice], ["carol", carol]]) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(T);
    try {
      await journey(page, context);
    } catch (e) {
      failed += 1;
      console.error(`oidc_apache.js: ${name} failed at ${page.url()}: ${e.message}`);
      console.error((await page.content()).slice(0, 1500));
    }
    await context.close();
  }
  await browser.close();
  process.exitCode = failed ? 1 : 0;
})();
