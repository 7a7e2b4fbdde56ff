// authd portal: the only script. Everything works without it except the live password
// checklist and the confirmation before a two-factor reset. No inline code (the CSP
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

  function start() {
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
