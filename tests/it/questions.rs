//! Security questions without enumeration (issue 14, part 4): `authctl questions
//! set|show`; users pick from the admin's list; unknown names are shown questions of the
//! same list, as many as real users have, stable per name — so the questions answered
//! for a real name and an unknown one cannot be told apart.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::daemon_common::*;

const LIST: &[&str] = &[
    "What was the name of your first pet?",
    "In which city were you born?",
    "What was the name of your primary school?",
    "What was the make of your first car?",
    "Who was your favourite teacher?",
    "What was your childhood nickname?",
    "What is your favourite book?",
];

#[test]
fn real_and_unknown_names_get_questions_of_the_same_list_and_count() {
    let env = provision();
    add_user(&env, "tess", "school", &[], "user");
    add_user(&env, "uma", "school", &[], "user");

    let shown = env.json(&["questions", "show"]);
    assert_eq!(shown["source"], "default", "{shown:#}");
    assert!(shown["questions"].as_array().is_some_and(|q| q.len() >= 5));
    let file = env.path("questions.txt");
    std::fs::write(&file, format!("{}\n\n", LIST.join("\n"))).expect("write list");
    let file = file.to_str().expect("utf-8 path");
    env.ctl(&["questions", "set", "--file", "/nonexistent/list"])
        .fails(3);
    let short = env.path("short.txt");
    std::fs::write(&short, "Only one question here?\n").expect("write");
    env.ctl(&["questions", "set", "--file", short.to_str().expect("path")])
        .fails(2);
    let v = env.json(&["questions", "set", "--file", file]);
    assert_eq!(v["questions"].as_array().map(Vec::len), Some(LIST.len()));
    let shown = env.json(&["questions", "show"]);
    assert_eq!(shown["source"], "admin");
    assert_eq!(shown["questions"], json!(LIST));
    let rows = env.audit(&["--event", "admin.questions.set"]);
    let ok = rows.iter().filter(|r| r["outcome"] == "success").count();
    assert_eq!(ok, 1, "the refusals are audited as failures: {rows:#?}");

    let mut d = Daemon::start(&env, &[]);
    let set = |who: &str, qs: &[&str]| {
        let s = d.login_session(who, PW);
        let body: Vec<Value> = qs
            .iter()
            .enumerate()
            .map(|(i, q)| json!({"question": q, "answer": format!("answer {i}")}))
            .collect();
        let r = d.put_auth("/v1/me/security-questions", &s, &json!({"questions": body}));
        (s, r)
    };
    // A question of one's own is refused now; the list is offered.
    let (s, r) = set("tess", &["What is my secret hobby?", LIST[0], LIST[1]]);
    r.expect_error(400, "invalid_input");
    let v = d.get_auth("/v1/me/security-questions", &s).expect(200);
    assert_eq!(v["offered"], json!(LIST));
    assert_eq!(v["only_offered"], true);
    let (_, r) = set("tess", &[LIST[3], LIST[0], LIST[5]]);
    r.expect(200);

    let forgot = |name: &str| {
        d.post("/v1/password/forgot", &json!({"username": name}))
            .expect(200)
    };
    let real = forgot("tess");
    let list: BTreeSet<&str> = LIST.iter().copied().collect();
    let qs = |v: &Value| strings(&v["questions"]);
    assert_eq!(qs(&real).len(), 3);
    // Every unknown name (and uma, who has none) gets 3 questions of the list, stable.
    let mut seen = BTreeSet::new();
    for name in [
        "nobody", "uma", "Zed", "ghost-1", "ghost-2", "ghost-3", "ghost-4",
    ] {
        let v = forgot(name);
        let q = qs(&v);
        assert_eq!(q.len(), 3, "{name}: {v:#}");
        assert!(q.iter().all(|x| list.contains(x.as_str())), "{name}: {q:?}");
        assert_eq!(q.iter().collect::<BTreeSet<_>>().len(), 3, "distinct");
        assert_eq!(qs(&forgot(name)), q, "stable for {name}");
        seen.insert(q);
    }
    assert!(seen.len() > 1, "different names, different questions");
    assert_eq!(
        real.as_object().map(|o| o.keys().collect::<Vec<_>>()),
        forgot("nobody")
            .as_object()
            .map(|o| o.keys().collect::<Vec<_>>())
    );
    d.assert_healthy();
}

/// The portal's security-question page: with an admin's list, each question is a
/// `<select>` of that list (no free text); the form saves questions of the list and a
/// question typed in anyway is refused with the reason; without a list, free text with
/// suggestions.
#[test]
fn the_portal_offers_the_admins_list_and_refuses_other_questions() {
    use crate::portal::kit::{self, field, Browser};
    let env = kit::provision();
    kit::add(&env, "vera", "school", "user", &[]);
    let d = kit::Daemon::start(&env, &[]);
    let mut b = Browser::new(&d.addr);
    assert_eq!(kit::form_login(&mut b, "", "vera", PW).status, 303);

    // No list: free text, the built-in questions as suggestions.
    let page = b.get("/security-questions").body;
    assert!(
        page.contains("<input type=\"text\" id=\"question1\" name=\"question\""),
        "{page}"
    );
    assert!(page.contains("<datalist id=\"question-ideas\">"), "{page}");
    assert!(!page.contains("<select"), "{page}");

    let file = env.path("questions.txt");
    std::fs::write(&file, LIST.join("\n")).expect("write list");
    env.ctl(&["questions", "set", "--file", file.to_str().expect("path")])
        .ok();
    let page = b.get("/security-questions").body;
    assert!(
        page.contains("<select id=\"question1\" name=\"question\" required>"),
        "{page}"
    );
    assert!(
        page.contains("<select id=\"question3\" name=\"question\">"),
        "{page}"
    );
    assert!(
        !page.contains("type=\"text\" id=\"question"),
        "no free text: {page}"
    );
    assert!(!page.contains("datalist"), "{page}");
    for q in LIST {
        let option = format!("<option>{}</option>", q.replace('\'', "&#39;"));
        assert_eq!(page.matches(&option).count(), 3, "{q} in each row: {page}");
    }
    let csrf = field(&page, "csrf").expect("csrf");
    let post = |b: &mut Browser, qs: [&str; 3]| {
        b.post(
            "/security-questions",
            &[
                ("csrf", csrf.as_str()),
                ("question", qs[0]),
                ("answer", "Rex"),
                ("question", qs[1]),
                ("answer", "Leeds"),
                ("question", qs[2]),
                ("answer", ""),
            ],
        )
    };
    // A question of one's own, posted anyway: refused, nothing saved.
    let r = post(&mut b, ["What is my secret hobby?", LIST[1], ""]);
    assert_eq!(r.status, 422, "{r:?}");
    assert!(
        r.body.contains("not one of the questions offered here"),
        "{}",
        r.body
    );
    assert!(r.body.contains("<select"), "{}", r.body);
    assert!(
        b.get("/security-questions")
            .body
            .contains("You have no security questions yet"),
        "nothing saved"
    );
    // Questions of the list: saved, and shown selected.
    let r = post(&mut b, [LIST[4], LIST[1], ""]);
    assert_eq!(r.status, 303, "{r:?}");
    let page = b.get("/security-questions").body;
    assert!(page.contains("You have 2 security questions"), "{page}");
    for q in [LIST[4], LIST[1]] {
        let option = format!("<option selected>{}</option>", q.replace('\'', "&#39;"));
        assert!(page.contains(&option), "{q} selected: {page}");
    }
    let saved = env.audit(&["--event", "security_questions.set", "--user", "vera"]);
    assert_eq!(
        saved.iter().filter(|r| r["outcome"] == "success").count(),
        1,
        "one save audited: {saved:#?}"
    );
}
