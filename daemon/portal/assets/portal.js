// authd portal: the only script. Everything works without it except the live password
// checklist, the confirmation before a two-factor reset, and passkeys (WebAuthn needs
// the browser's navigator.credentials: a form with data-webauthn="get|create" carries
// the server's options in data-webauthn-options; this script asks the authenticator
// and posts credential.toJSON() in the form's hidden "credential" field). No inline code (the CSP
// allows scripts from this file only) and no network calls (connect-src is 'none'):
// the rules are evaluated here exactly as the server does (authcore::password).
(function () {
  "use strict";

  var tests = {
    lowercase: function (pw) { return /\p{Lowercase}/u.test(pw); },
    uppercase: function (pw) { return /\p{Uppercase}/u.test(pw); },
    digit: function (pw) { return /\p{N}/u.test(pw); },
    special: function (pw) { return /[^\p{Alphabetic}\p{N}\p{Cc}]/u.test(pw); },
    min_length: function (pw, list) {
      return Array.from(pw).length >= Number(list.getAttribute("data-min"));
    },
    max_length: function (pw, list) {
      return new TextEncoder().encode(pw).length <= Number(list.getAttribute("data-max"));
    },
    no_control: function (pw) { return !/\p{Cc}/u.test(pw); }
  };

  function mark(item, met) {
    item.classList.toggle("met", met);
    item.classList.toggle("unmet", !met);
    item.setAttribute("data-met", met ? "true" : "false");
    var m = item.querySelector(".mark");
    if (m) { m.textContent = met ? "\u2713" : "\u2717"; }
    var s = item.querySelector(".state");
    if (s) { s.textContent = met ? " (met)" : " (not met)"; }
  }

  function checklist(input) {
    var list = document.getElementById(input.getAttribute("data-checklist"));
    if (!list) { return; }
    var status = document.createElement("p");
    status.className = "sr-only";
    status.id = "rules-status";
    status.setAttribute("aria-live", "polite");
    list.parentNode.appendChild(status);
    var last = -1;
    function update() {
      var pw = input.value;
      var items = list.querySelectorAll("li[data-rule]");
      var met = 0;
      for (var i = 0; i < items.length; i++) {
        var test = tests[items[i].getAttribute("data-rule")];
        if (!test) { continue; } // an unknown rule: the server decides on submit
        var ok = test(pw, list);
        mark(items[i], ok);
        if (ok) { met++; }
      }
      if (met !== last) {
        last = met;
        status.textContent = met + " of " + items.length + " password rules met";
      }
    }
    input.addEventListener("input", update);
    if (input.value) { update(); }
  }

  function confirmBox(input) {
    var first = document.getElementById(input.getAttribute("data-confirm-of"));
    var msg = document.getElementById("mismatch");
    if (!first || !msg) { return; }
    function update() {
      var bad = input.value.length > 0 && input.value !== first.value;
      msg.hidden = !bad;
      if (bad) { input.setAttribute("aria-invalid", "true"); }
      else { input.removeAttribute("aria-invalid"); }
    }
    input.addEventListener("input", update);
    first.addEventListener("input", function () { if (input.value) { update(); } });
  }

  function confirmForms() {
    var forms = document.querySelectorAll("form[data-confirm]");
    for (var i = 0; i < forms.length; i++) {
      forms[i].addEventListener("submit", function (e) {
        if (!window.confirm(this.getAttribute("data-confirm"))) { e.preventDefault(); }
      });
    }
  }

  // WebAuthn's JSON forms (the server's options, credential.toJSON()) with the
  // browser's own parsers; base64url conversion only where a browser lacks them.
  function b64u(buf) {
    var s = "", b = new Uint8Array(buf);
    for (var i = 0; i < b.length; i++) { s += String.fromCharCode(b[i]); }
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function unb64u(str) {
    var s = atob(str.replace(/-/g, "+").replace(/_/g, "/"));
    var b = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) { b[i] = s.charCodeAt(i); }
    return b.buffer;
  }
  function parseOptions(mode, json) {
    var PKC = window.PublicKeyCredential;
    if (mode === "create" && PKC.parseCreationOptionsFromJSON) {
      return PKC.parseCreationOptionsFromJSON(json);
    }
    if (mode === "get" && PKC.parseRequestOptionsFromJSON) {
      return PKC.parseRequestOptionsFromJSON(json);
    }
    var o = Object.assign({}, json);
    o.challenge = unb64u(json.challenge);
    if (json.user) { o.user = Object.assign({}, json.user, { id: unb64u(json.user.id) }); }
    ["excludeCredentials", "allowCredentials"].forEach(function (k) {
      if (json[k]) {
        o[k] = json[k].map(function (c) { return Object.assign({}, c, { id: unb64u(c.id) }); });
      }
    });
    return o;
  }
  function credentialJSON(c) {
    if (c.toJSON) { return c.toJSON(); }
    var r = c.response, out = { id: c.id, rawId: b64u(c.rawId), type: c.type,
      clientExtensionResults: c.getClientExtensionResults(), response: {
        clientDataJSON: b64u(r.clientDataJSON) } };
    if (r.attestationObject) { out.response.attestationObject = b64u(r.attestationObject); }
    if (r.authenticatorData) { out.response.authenticatorData = b64u(r.authenticatorData); }
    if (r.signature) { out.response.signature = b64u(r.signature); }
    if (r.userHandle) { out.response.userHandle = b64u(r.userHandle); }
    return out;
  }
  function webauthnForm(form) {
    var mode = form.getAttribute("data-webauthn");
    var status = form.querySelector("#webauthn-status");
    form.addEventListener("submit", function (e) {
      var field = form.querySelector("input[name=credential]");
      if (field.value) { return; }
      e.preventDefault();
      if (!window.PublicKeyCredential || !navigator.credentials) {
        if (status) { status.textContent = "This browser cannot use passkeys."; }
        return;
      }
      var json = JSON.parse(form.getAttribute("data-webauthn-options")).publicKey;
      var options = { publicKey: parseOptions(mode, json) };
      var ask = mode === "create" ? navigator.credentials.create(options)
                                  : navigator.credentials.get(options);
      if (status) { status.textContent = "Waiting for your passkey\u2026"; }
      ask.then(function (c) {
        field.value = JSON.stringify(credentialJSON(c));
        form.submit();
      }, function (err) {
        if (status) { status.textContent = "The passkey did not answer (" + err.name + "). Try again."; }
      });
    });
  }

  function start() {
    var wa = document.querySelectorAll("form[data-webauthn]");
    for (var w = 0; w < wa.length; w++) { webauthnForm(wa[w]); }
    var pw = document.querySelectorAll("input[data-checklist]");
    for (var i = 0; i < pw.length; i++) { checklist(pw[i]); }
    var cf = document.querySelectorAll("input[data-confirm-of]");
    for (var j = 0; j < cf.length; j++) { confirmBox(cf[j]); }
    confirmForms();
    document.documentElement.classList.add("js");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
