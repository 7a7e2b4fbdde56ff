// The sign-in codes authd mails (its --mail-dir, one .eml file per message), for the
// journeys that sign in with an emailed code (journeys.js, oidc_apache.js).
"use strict";

const fs = require("node:fs");
const path = require("node:path");

/** The message files in `dir` now. */
function mails(dir) {
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith(".eml")) : [];
}

/** The sign-in codes mailed to `to` in `dir` in messages not in `before` (security
 *  notices, which the outbox may deliver a little later, are not codes). */
function newCodes(dir, to, before) {
  const codes = [];
  for (const f of mails(dir)) {
    if (before.includes(f)) continue;
    const text = fs.readFileSync(path.join(dir, f), "utf8").replace(/=\r?\n/g, "");
    const m = text.match(/sign-in code is:\s*(\d{6})/);
    if (m && new RegExp(`^To: .*${to}`, "mi").test(text)) codes.push(m[1]);
  }
  return codes;
}

/** The code of the first sign-in mail to `to` in `dir` that is not in `before`, waiting at
 *  most `ms`. */
async function mailedCode(dir, to, before, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const codes = newCodes(dir, to, before);
    if (codes.length > 0) return codes[0];
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no sign-in code mailed to ${to} within ${ms} ms`);
}

module.exports = { mails, mailedCode, newCodes };
