//! authd: the login daemon. (Placeholder until the daemon lands: opens or creates the
//! database and its key file, then exits.)
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

/// The authd login and second-factor daemon.
///
/// Serves the login API over HTTP on one SQLite file. With no arguments it uses
/// ./authd.db (created with its key file when missing) on 127.0.0.1:8080.
#[derive(Debug, Parser)]
#[command(name = "authd", version, max_term_width = 100)]
struct Args {
    /// The database file (created when missing).
    #[arg(
        long,
        env = "AUTHD_DB",
        default_value = "authd.db",
        value_name = "PATH"
    )]
    db: PathBuf,
    /// The secret-encryption key file [default: DB.key].
    #[arg(long, env = "AUTHD_KEY_FILE", value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// The address to listen on (port 0 picks a free port).
    #[arg(
        long,
        env = "AUTHD_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    listen: String,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Generate files from the command-line definition.
    #[command(subcommand)]
    Generate(Gen),
}

#[derive(Debug, Subcommand)]
enum Gen {
    /// The authd man page.
    Man {
        #[arg(long, value_name = "DIR", default_value = ".")]
        out_dir: PathBuf,
    },
}

fn main() {
    let args = Args::parse();
    if let Some(Cmd::Generate(Gen::Man { out_dir })) = &args.command {
        let page = clap_mangen::Man::new(Args::command());
        let mut buf = Vec::new();
        let r = page
            .render(&mut buf)
            .and_then(|_| std::fs::create_dir_all(out_dir))
            .and_then(|_| std::fs::write(out_dir.join("authd.1"), buf));
        if let Err(e) = r {
            eprintln!("error: cannot write the man page: {e}");
            std::process::exit(1);
        }
        return;
    }
    let loc = authcore::db::Location::new(&args.db, args.key_file.clone());
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    match authcore::db::open_or_create(&loc) {
        Ok(_) => println!(
            "opened {} (the HTTP service is not built yet)",
            loc.db.display()
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
