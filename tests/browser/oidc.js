// Headless Chromium signing in to an OpenID Connect client through authd (issue 17): the
// authorization request, the portal's sign-in (password, then the authenticator code),
// the consent page, and back to the client with a code. Run by tests/it/oidc.rs, which
// starts authd and a stand-in client and passes, in the environment:
//   AUTHD_URL  http://127.0.0.1:PORT     AUTHORIZE  the authorization request's path+query
//   CLIENT     the redirect URI          USERNAME, PASSWORD, TOTP_SECRET   the user
//   STEP_UP    (optional) the same request asking acr_values=urn:authd:acr:mfa
// Prints `back: URL` (the client's URL with the code); exit 0 when the journey passed.
// With STEP_UP: the first sign-in remembers the device; signed out (the device cookie
// kept), the step-up request signs in with the password alone on that device, then the
// step-up page asks for the code only, and `stepped: URL` is the client's URL after it.
"use strict";

const { chromium } = require("playwright-core");
const { execFileSync } = require("node:child_process");

const env = (n) => {
  if (!process.env[n]) {
    console.error(`oidc.js: ${n} is not set (run it through cargo test)`);
    process.exit(2);
  }
  return process.env[n];
};
const T = 15000;

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
  });
  const page = await browser.newPage();
  page.setDefaultTimeout(T);
  const csp = [];
  page.on("console", (m) => { if (/Content Security Policy/.test(m.text())) csp.push(m.text()); });
  try {
    await page.goto(env("AUTHD_URL") + env("AUTHORIZE"));
    await page.waitForSelector("#username");
    await page.fill("#username", env("USERNAME"));
    await page.fill("#password", env("PASSWORD"));
    await Promise.all([page.waitForNavigation(), page.click("#login-form button[type=submit]")]);
    const t = Math.floor(Date.now() / 1000);
    const code = execFileSync("oathtool", ["--totp", "-b", "-N", `@${t}`, env("TOTP_SECRET")])
      .toString().trim();
    await page.fill("#code", code);
    if (process.env.STEP_UP) await page.check("#remember_device");
    await Promise.all([page.waitForNavigation(), page.click("#code-form button[type=submit]")]);
    // The consent page (the client is not trusted).
    await page.waitForSelector("#allow");
    await page.click("#allow");
    await page.waitForURL((u) => u.toString().startsWith(env("CLIENT") + "?"), { timeout: T });
    if (csp.length) throw new Error(`CSP refusals: ${csp.join(" | ")}`);
    console.log(`back: ${page.url()}`);
    if (process.env.STEP_UP) {
      const context = page.context();
      const keep = (await context.cookies()).filter((c) => c.name === "authd_device");
      await context.clearCookies();
      await context.addCookies(keep);
      await page.goto(env("AUTHD_URL") + process.env.STEP_UP);
      await page.waitForSelector("#username");
      await page.fill("#username", env("USERNAME"));
      await page.fill("#password", env("PASSWORD"));
      // The remembered device: no code at sign-in, so the client's acr_values are not
      // met; the step-up page asks for the second factor only.
      await Promise.all([page.waitForNavigation(), page.click("#login-form button[type=submit]")]);
      await page.waitForSelector("#step-up-form");
      if (await page.$("#password")) throw new Error("the step-up asked for the password");
      await Promise.all([page.waitForNavigation(), page.click("#step-up")]);
      const next = execFileSync("oathtool",
        ["--totp", "-b", "-N", `@${t + 30}`, env("TOTP_SECRET")]).toString().trim();
      await page.fill("#code", next);
      await page.click("#code-form button[type=submit]");
      await page.waitForURL((u) => u.toString().startsWith(env("CLIENT") + "?"), { timeout: T });
      if (csp.length) throw new Error(`CSP refusals: ${csp.join(" | ")}`);
      console.log(`stepped: ${page.url()}`);
    }
  } catch (e) {
    console.error(`oidc.js: failed at ${page.url()}: ${e.message}`);
    console.error((await page.content()).slice(0, 2000));
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
})();
