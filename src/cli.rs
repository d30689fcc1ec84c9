//! The command line (design document, section 2, a contract): flags of the reconciliation and
//! the subcommands.

use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{ArgAction, CommandFactory, Parser, Subcommand, ValueEnum};

/// `custsync --version`: the crate's version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CUSTSYNC_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "custsync",
    version = VERSION,
    about = "Keeps one customer list true across Nuvemshop, Ecwid, Malomo, Partial.ly and Sendwithus"
)]
pub struct Cli {
    /// Configuration file [default: $CUSTSYNC_CONFIG, then config/custsync.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Run one reconciliation of every enabled provider, then exit (0 converged, 1 not).
    #[arg(long)]
    pub once: bool,

    /// Compute and print the plan; push nothing and record nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Release the deletes the guard holds for provider NAME, for this run (repeatable).
    #[arg(long = "allow-deletes", value_name = "NAME")]
    pub allow_deletes: Vec<String>,

    /// Write a JSON report of the reconciliation to PATH.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// How `--dry-run` prints its plan on stdout: lines a person reads, or one JSON
    /// document for machines.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text, value_name = "FORMAT")]
    pub plan_format: PlanFormat,

    /// Limit the command to tenant NAME (repeatable; default: every tenant).
    #[arg(
        long = "tenant",
        value_name = "NAME",
        global = true,
        action = ArgAction::Append,
        value_parser = parse_tenant_name
    )]
    pub tenants: Vec<String>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--tenant NAME`: the syntax of a tenant name, checked before any config is read.
fn parse_tenant_name(s: &str) -> Result<String, String> {
    if crate::config::valid_tenant_name(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a tenant name: 1 to 63 of a-z 0-9 _ -, starting with a-z or 0-9"
        ))
    }
}

impl Cli {
    /// Parses the command line of the process; bad usage exits 2 with clap's message.
    pub fn parse_checked() -> Cli {
        Cli::try_parse_checked(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Parses `args` (the program name first) and refuses the reconciliation's flags
    /// given to a subcommand, which would otherwise be silently ignored: `--dry-run
    /// forget` would really erase, `--report status` would write no report.
    pub fn try_parse_checked<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        let Some(command) = &cli.command else {
            return Ok(cli);
        };
        let given = [
            ("--once", cli.once),
            ("--dry-run", cli.dry_run),
            ("--report", cli.report.is_some()),
            ("--allow-deletes", !cli.allow_deletes.is_empty()),
            ("--plan-format", cli.plan_format != PlanFormat::Text),
        ];
        let Some((flag, _)) = given.iter().find(|(_, set)| *set) else {
            return Ok(cli);
        };
        let name = command.name();
        let hint = match (command, *flag) {
            (Command::Forget { .. }, "--dry-run") => {
                " (to see what forget would erase: custsync forget EMAIL --dry-run)"
            }
            _ => "",
        };
        Err(Cli::command().error(
            ErrorKind::ArgumentConflict,
            format!(
                "the argument '{flag}' is a flag of the reconciliation and cannot be used with the subcommand '{name}'{hint}"
            ),
        ))
    }
}

impl Command {
    /// The subcommand as typed on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Check { .. } => "check",
            Command::Status { .. } => "status",
            Command::Audit { .. } => "audit",
            Command::Forget { .. } => "forget",
            Command::Activity { .. } => "activity",
            Command::Demo { .. } => "demo",
            Command::Completions { .. } => "completions",
            Command::Man => "man",
            Command::Sandbox { .. } => "sandbox",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and reach every provider with one cheap authenticated request.
    Check {
        /// Validate the config only; no network.
        #[arg(long)]
        offline: bool,
    },
    /// Per tenant: its lease and last run; per provider: cursor, last result, outbox
    /// depth by state, deletes the guard holds (and the flag that releases them), the
    /// listing error and the last failed or parked operations.
    Status {
        /// One JSON document: `{"tenants": {NAME: {"holder": WORKER or null, ...}}}`.
        #[arg(long)]
        json: bool,
    },
    /// The audit trail of merges and writes, as JSON lines.
    Audit {
        /// Only this provider (a NAME of the config).
        #[arg(long, value_name = "NAME")]
        provider: Option<String>,
        /// Only this action.
        #[arg(long, value_name = "ACTION", help = action_help())]
        action: Option<String>,
        /// Only this person.
        #[arg(long)]
        email: Option<String>,
        /// Only this run.
        #[arg(long)]
        run: Option<i64>,
        /// At most N lines.
        #[arg(long)]
        limit: Option<i64>,
    },
    /// Erase one person everywhere: delete them in every provider that can delete, purge
    /// their data locally, keep only a hash of the email so they are not imported again.
    ///
    /// On a terminal it shows what it found and asks before it erases; off a terminal
    /// (a script, a pipe) it erases without asking, as `--yes` does.
    Forget {
        /// The person's email.
        email: String,
        /// Show what would be deleted in each provider and purged locally; look the
        /// person up but write nothing, anywhere.
        #[arg(long)]
        dry_run: bool,
        /// Erase without asking, also on a terminal.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// One person's activity across providers (Malomo events, Sendwithus email logs),
    /// as the store holds it: one timeline, newest first.
    Activity {
        /// The person's email.
        email: String,
        /// One JSON object a line (provider, id, type, occurred_at, label) instead of a table.
        #[arg(long)]
        json: bool,
        /// Read the person's streams from the providers first (reads only).
        #[arg(long)]
        refresh: bool,
    },
    /// Start the five sandbox emulators, seed them and run one reconciliation (no account
    /// and no config needed).
    Demo {
        /// Generated people on top of the documents' example customers.
        #[arg(long, default_value_t = 300)]
        customers: usize,
    },
    /// Start the five sandbox emulators with the demo's data and a ready configuration,
    /// and keep them running until Ctrl-C, so that every command can be tried with no
    /// account.
    Sandbox {
        /// Where the configuration and its database are written.
        #[arg(long, default_value = "custsync-sandbox", value_name = "DIR")]
        dir: PathBuf,
        /// Generated people on top of the documents' example customers.
        #[arg(long, default_value_t = 300)]
        customers: usize,
    },
    /// Print a shell completion script (e.g. `custsync completions bash >
    /// /etc/bash_completion.d/custsync`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `custsync man | man -l -`.
    Man,
}

impl Cli {
    /// Writes the completion script of `shell` for the whole command line.
    pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
        clap_complete::generate(shell, &mut Cli::command(), "custsync", out);
    }

    /// Writes the manual page, subcommands included.
    pub fn man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
        clap_mangen::Man::new(Cli::command()).render(out)
    }
}

/// `audit --action`'s help: the actions the store writes.
fn action_help() -> String {
    format!(
        "Only this action: {}",
        crate::store::audit::ACTIONS.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_checked(std::iter::once("custsync").chain(args.split_whitespace()))
    }

    #[test]
    fn reconciliation_flags_are_refused_with_every_subcommand() {
        let flags = [
            "--once",
            "--dry-run",
            "--report r.json",
            "--allow-deletes store",
        ];
        let commands = [
            "status",
            "audit",
            "forget x@example.com",
            "activity x@example.com",
            "check",
            "check --offline",
            "demo",
        ];
        for flag in flags {
            for command in commands {
                let line = format!("{flag} {command}");
                let e = parse(&line).expect_err(&line);
                assert_eq!(e.kind(), ErrorKind::ArgumentConflict, "{line}");
                assert_eq!(e.exit_code(), 2, "{line}");
                let text = e.to_string();
                let first = text.lines().next().unwrap_or_default();
                let flag_name = flag.split(' ').next().unwrap();
                assert!(
                    first.contains(flag_name) && first.contains(command.split(' ').next().unwrap()),
                    "{line}: {text}"
                );
            }
        }
    }

    #[test]
    fn config_and_log_format_stay_global() {
        for line in [
            "--config c.toml status",
            "status --config c.toml",
            "--log-format json forget x@example.com",
            "forget x@example.com --log-format json --config c.toml",
            "--config c.toml check --offline",
        ] {
            parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }

    #[test]
    fn the_reconciliation_takes_its_flags() {
        let cli =
            parse("--once --dry-run --report r.json --allow-deletes a --allow-deletes b").unwrap();
        assert!(cli.once && cli.dry_run && cli.command.is_none());
        assert_eq!(cli.allow_deletes, ["a", "b"]);
    }

    #[test]
    fn status_takes_json_and_audit_lists_its_actions() {
        let cli = parse("status --json").unwrap();
        assert!(matches!(cli.command, Some(Command::Status { json: true })));
        let cli = parse("status").unwrap();
        assert!(matches!(cli.command, Some(Command::Status { json: false })));
        let help = parse("audit --help").unwrap_err().to_string();
        for action in crate::store::audit::ACTIONS {
            assert!(help.contains(action), "{action}: {help}");
        }
    }

    #[test]
    fn forget_has_its_own_dry_run_and_yes() {
        let cli = parse("forget x@example.com --dry-run").unwrap();
        assert!(!cli.dry_run, "not the reconciliation's flag");
        assert!(matches!(
            cli.command,
            Some(Command::Forget {
                dry_run: true,
                yes: false,
                ..
            })
        ));
        let cli = parse("forget --yes x@example.com").unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Forget {
                dry_run: false,
                yes: true,
                ..
            })
        ));
        let e = parse("--dry-run forget x@example.com").unwrap_err();
        assert!(e.to_string().contains("forget EMAIL --dry-run"), "{e}");
    }

    #[test]
    fn tenant_is_global_and_repeatable() {
        let cli = parse("--once --tenant shop-a --tenant b_2").unwrap();
        assert_eq!(cli.tenants, ["shop-a", "b_2"]);
        assert!(parse("").unwrap().tenants.is_empty());
        for line in [
            "--tenant a",
            "--tenant a --dry-run --once",
            "status --tenant a --json",
            "--tenant a status",
            "check --offline --tenant a",
            "forget x@example.com --tenant a --tenant b",
            "audit --tenant a --provider p",
            "activity x@example.com --tenant a",
        ] {
            let cli = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(cli.tenants.first().map(String::as_str), Some("a"), "{line}");
        }
        let cli = parse("forget x@example.com --tenant a --tenant b").unwrap();
        assert_eq!(cli.tenants, ["a", "b"]);
    }

    #[test]
    fn a_bad_tenant_name_is_bad_usage() {
        let long_ok = "a".repeat(63);
        assert_eq!(
            parse(&format!("--tenant {long_ok}")).unwrap().tenants,
            [long_ok]
        );
        for bad in [
            "a".repeat(64),
            "-a".into(),
            "_a".into(),
            "Shop".into(),
            "shop.a".into(),
            "shop/a".into(),
            "".into(),
        ] {
            let arg = format!("--tenant={bad}");
            let e = Cli::try_parse_checked(["custsync", arg.as_str(), "status"]).expect_err(&bad);
            assert_eq!(e.exit_code(), 2, "{bad}");
            let text = e.to_string();
            assert!(
                text.contains("--tenant") && text.contains("not a tenant name"),
                "{bad}: {text}"
            );
        }
        // Without `=`, a leading dash reads as another flag: bad usage all the same.
        assert_eq!(parse("--tenant -a status").unwrap_err().exit_code(), 2);
    }
}
