//! Interoperability with real clients: `oathtool` (an RFC 6238 implementation that is not
//! ours) computes codes that `authctl totp test` accepts, and `zbarimg` (a real QR decoder)
//! reads both the `--png` image and the QR printed in the terminal back to exactly the
//! printed otpauth URI. scripts/test.sh installs both tools.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const STEP: i64 = 30;

/// A code from oathtool for base32 `secret` at Unix time `at`.
fn oathtool(secret: &str, at: i64) -> String {
    require("oathtool", "oathtool");
    let out = Command::new("oathtool")
        .args(["--totp", "-b", "-N", &format!("@{at}"), secret])
        .output()
        .expect("run oathtool");
    assert!(
        out.status.success(),
        "oathtool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(code.len(), 6, "oathtool printed {code:?}");
    code
}

/// Wait, if needed, until at least `margin` seconds are left in the current time step, so
/// that a code computed now is still current when authctl checks it. Returns `now`.
fn settle(margin: i64) -> i64 {
    let left = STEP - now().rem_euclid(STEP);
    if left < margin {
        std::thread::sleep(Duration::from_millis((left as u64) * 1000 + 200));
    }
    now()
}

/// Decode the QR code(s) in an image with zbarimg; returns the decoded text.
fn zbarimg(png: &Path) -> Option<String> {
    require("zbarimg", "zbar-tools");
    let out = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(png)
        .output()
        .expect("run zbarimg");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).expect("zbarimg output is UTF-8");
    Some(text.strip_suffix('\n').unwrap_or(&text).to_string())
}

fn enrolled(env: &Env) -> (String, Value) {
    env.add_user("alice", STRONG, &[]);
    let v = env.enroll("alice");
    (v["secret"].as_str().unwrap().to_string(), v)
}

#[test]
fn oathtool_code_is_accepted_by_totp_test() {
    let env = Env::init();
    let (secret, _) = enrolled(&env);
    let now = settle(5);
    let code = oathtool(&secret, now);
    let out = env.ctl(&["--json", "totp", "test", "alice", &code]);
    out.ok();
    let v = out.json();
    assert_eq!(v["username"], "alice");
    assert_eq!(v["match"], true, "{out:?}");
    assert_eq!(v["offset"], 0, "{out:?}");
    let step = now / STEP;
    assert_eq!(v["step"], step, "{out:?}");
    // Nothing is consumed: the same code matches again.
    let again = env.ctl(&["--json", "totp", "test", "alice", &code]);
    again.ok();
    assert_eq!(again.json()["match"], true);
    // Table mode says so too.
    env.ctl(&["totp", "test", "alice", &code]).ok();
}

#[test]
fn totp_test_reports_the_step_offset() {
    let env = Env::init();
    let (secret, _) = enrolled(&env);
    // (steps away from now, accepted within the ±1 policy window)
    let cases: &[(i64, bool)] = &[
        (0, true),
        (1, true),
        (-1, true),
        (2, false),
        (-2, false),
        (5, false),
    ];
    for &(delta, accepted) in cases {
        let now = settle(5);
        let code = oathtool(&secret, now + delta * STEP);
        let out = env.ctl(&["--json", "totp", "test", "alice", &code]);
        out.code(if accepted { 0 } else { 1 });
        let v = out.json();
        assert_eq!(v["match"], accepted, "delta {delta}: {out:?}");
        assert_eq!(v["offset"], delta, "delta {delta}: {out:?}");
        if !v["step"].is_null() {
            assert_eq!(v["step"], now / STEP + delta, "delta {delta}: {out:?}");
        }
    }
    // Far beyond any diagnosis window (more than a day away): no offset at all.
    let now = settle(5);
    let code = oathtool(&secret, now + 3000 * STEP);
    let out = env.ctl(&["--json", "totp", "test", "alice", &code]);
    out.code(1);
    let v = out.json();
    // (A chance collision with a nearby step is ~1e-5; accept it rather than flake.)
    if v["offset"].is_null() {
        assert_eq!(v["match"], false, "{out:?}");
    }
}

#[test]
fn png_qr_decodes_to_the_printed_uri() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let png = env.path("alice.png");
    let v = env.json(&["enroll", "alice", "--png", png.to_str().unwrap()]);
    let uri = v["otpauth_uri"].as_str().unwrap();
    let decoded =
        zbarimg(&png).unwrap_or_else(|| panic!("zbarimg found no QR code in {}", png.display()));
    assert_eq!(decoded, uri);

    // The phone's view: a code computed from the secret inside the QR is accepted.
    let secret = decoded
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .expect("secret= in the otpauth URI");
    let now = settle(5);
    env.ctl(&["totp", "test", "alice", &oathtool(secret, now)])
        .ok();
}

/// The QR drawn with Unicode half blocks, as rows of pixels (`true` = a filled half).
/// Takes the first run of at least 10 lines made only of `█ ▀ ▄` and spaces.
fn terminal_qr_pixels(stdout: &str) -> Vec<Vec<bool>> {
    let is_qr_line = |l: &str| {
        l.chars().any(|c| matches!(c, '█' | '▀' | '▄'))
            && l.chars().all(|c| matches!(c, '█' | '▀' | '▄' | ' '))
    };
    let lines: Vec<&str> = stdout.lines().collect();
    let mut start = None;
    let mut block: Vec<&str> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if is_qr_line(l) {
            start.get_or_insert(i);
            block.push(l);
        } else if block.len() >= 10 {
            break;
        } else {
            start = None;
            block.clear();
        }
    }
    assert!(
        block.len() >= 10,
        "no QR code (half-block lines) in:\n{stdout}"
    );
    let width = block.iter().map(|l| l.chars().count()).max().unwrap();
    let mut rows = Vec::new();
    for l in block {
        let mut top = vec![false; width];
        let mut bottom = vec![false; width];
        for (x, c) in l.chars().enumerate() {
            top[x] = matches!(c, '█' | '▀');
            bottom[x] = matches!(c, '█' | '▄');
        }
        rows.push(top);
        rows.push(bottom);
    }
    rows
}

/// Write `pixels` (true = dark) as a grayscale PNG, each module `scale`×`scale` pixels,
/// with a light quiet zone of 4 modules around it.
fn write_png(path: &Path, pixels: &[Vec<bool>], scale: usize) {
    let border = 4;
    let h = pixels.len() + 2 * border;
    let w = pixels[0].len() + 2 * border;
    let mut data = vec![255u8; w * scale * h * scale];
    for (y, row) in pixels.iter().enumerate() {
        for (x, &dark) in row.iter().enumerate() {
            if !dark {
                continue;
            }
            for dy in 0..scale {
                let py = (y + border) * scale + dy;
                let start = py * w * scale + (x + border) * scale;
                data[start..start + scale].fill(0);
            }
        }
    }
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(
        std::io::BufWriter::new(file),
        (w * scale) as u32,
        (h * scale) as u32,
    );
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(&data).unwrap();
    writer.finish().unwrap();
}

#[test]
fn terminal_qr_decodes_to_the_printed_uri() {
    let env = Env::init();
    env.add_user("alice", STRONG, &[]);
    let png = env.path("alice.png");
    let out = env.ctl(&["enroll", "alice", "--png", png.to_str().unwrap()]);
    out.ok();
    let printed = out
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("otpauth://"))
        .unwrap_or_else(|| panic!("no otpauth URI printed: {out:?}"))
        .to_string();
    assert_eq!(
        zbarimg(&png).as_deref(),
        Some(printed.as_str()),
        "the --png QR"
    );

    let pixels = terminal_qr_pixels(&out.stdout);
    // Terminals draw light-on-dark or dark-on-light: the quiet zone tells which, but try
    // both polarities rather than guess, and require the one that decodes to be exact.
    let mut decoded = Vec::new();
    for (name, invert) in [("filled = dark", false), ("filled = light", true)] {
        let img: Vec<Vec<bool>> = pixels
            .iter()
            .map(|r| r.iter().map(|&p| p != invert).collect())
            .collect();
        let path = env.path(&format!(
            "terminal-{}.png",
            if invert { "inverted" } else { "plain" }
        ));
        write_png(&path, &img, 8);
        if let Some(text) = zbarimg(&path) {
            decoded.push((name, text));
        }
    }
    assert!(
        !decoded.is_empty(),
        "zbarimg cannot read the terminal QR (rendered to {}):\n{}",
        env.dir.path().display(),
        out.stdout
    );
    for (name, text) in decoded {
        assert_eq!(text, printed, "terminal QR read as {name}");
    }
}
