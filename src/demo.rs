//! `custsync demo`: the whole system on one machine with no account. Starts the five
//! sandbox emulators on 127.0.0.1, seeds them with the customers of the providers'
//! documents and a few hundred generated people (overlapping, with conflicting values),
//! runs one reconciliation with progress shown, and prints what happened.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::app::{connect_all, open_store, AppError};
use crate::config::{Config, StorePath};
use crate::sandbox::all::Sandboxes;
use crate::sandbox::{ecwid, malomo, nuvemshop, partially, sendwithus};
use crate::store::audit::AuditFilter;
use crate::sync::report::Report;
use crate::sync::{progress, Engine, RunOptions};

const FIRST: [&str; 12] = [
    "Ana", "Bruno", "Carla", "Diego", "Elena", "Felipe", "Gabriela", "Hugo", "Isabel", "João",
    "Karin", "Lucas",
];
const LAST: [&str; 12] = [
    "Silva", "Souza", "Oliveira", "Costa", "Pereira", "Almeida", "Lima", "Gomes", "Ribeiro",
    "Martins", "Rocha", "Van Dijk",
];
const DOMAINS: [&str; 4] = [
    "example.com",
    "example.com.br",
    "mail.example.org",
    "shop.example.net",
];

pub async fn run(customers: usize) -> Result<ExitCode, AppError> {
    let sandboxes = Sandboxes::start()
        .await
        .context("starting the sandbox emulators")?;
    sandboxes.seed_document_examples();
    let people = seed_generated(&sandboxes, customers, 7);
    let dir = tempfile::tempdir().context("temporary directory for the demo database")?;
    let db = dir.path().join("demo.db");
    let johnny = seed_events(&sandboxes);
    let toml = sandboxes.config_toml(&format!("sqlite://{}", db.display()), 500.0, 50) + ACTIVITY;
    let config = Arc::new(Config::from_toml(&toml)?);

    println!("custsync demo: five sandbox providers on 127.0.0.1, no account needed");
    for (name, kind, url, _) in sandboxes.endpoints() {
        println!("  {name:<12} {kind:<11} {url}");
    }
    println!("seeded: the documents' example customers + {people} generated people, overlapping across providers\n");

    let store = open_store(&StorePath::File(db.clone()), None).await?;
    let engine = Engine::new(config.clone(), store.clone(), connect_all(&config)?);
    let stop = CancellationToken::new();
    let opts = RunOptions {
        mode: "once",
        progress: Some(progress::lines()),
        ..RunOptions::default()
    };
    eprintln!("reconciling...");
    let first = engine
        .reconcile(&opts, &stop)
        .await
        .context("reconciliation")?
        .map_err(anyhow::Error::new)?;
    println!("first reconciliation ({:.1} s):", first.duration_secs);
    print!("{}", indent(&first.table()));
    print_errors(&first);
    println!(
        "  activity: {} event(s) read for {} customer(s); groups: {} membership(s) added, {} removed",
        first.activity.events_fetched,
        first.activity.customers,
        first.groups.added,
        first.groups.removed
    );
    print_merges(&store).await?;
    // An email goes out to Johnny once Sendwithus knows him (custsync just created him there).
    sandboxes.sendwithus.add_log(
        "johnny@rosevideo.com",
        sendwithus::Sendwithus::document_log(
            "log_asdf1234qwerty",
            1_548_855_600,
            "opened",
            "Order Confirmation",
        ),
    );

    sandboxes.clear_logs();
    let quiet = RunOptions {
        mode: "once",
        ..RunOptions::default()
    };
    let second = engine
        .reconcile(&quiet, &stop)
        .await
        .context("second reconciliation")?
        .map_err(anyhow::Error::new)?;
    println!(
        "\nsecond reconciliation with no outside change: {} write request(s) sent (an in-step system sends none)",
        sandboxes.writes()
    );
    println!("\nholdings now: {}", holdings(&sandboxes));
    print_timeline(&store, &johnny).await?;
    store.close().await;
    // Records skipped for their data (the documents' duplicate email) are expected;
    // a write that failed, or a second run not in step, is not.
    let failed: u64 = first.providers.values().map(|p| p.failed).sum();
    Ok(if failed == 0 && second.converged {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The demo polls activity and keeps one Sendwithus group in step (DESIGN 14).
pub(crate) const ACTIVITY: &str = "
[activity]
enabled = true
customers_per_cycle = 1000

[[groups]]
provider = \"email\"
group_id = \"grp_marketing\"
when = { accepts_marketing = true }
";

/// Gives the Malomo customer of the document (Johnny) a few events, the document's
/// among them. Answers his email.
pub(crate) fn seed_events(s: &Sandboxes) -> String {
    let email = "johnny@rosevideo.com";
    if let Some(johnny) = s.malomo.by_email(email).first() {
        for (n, (id, label)) in [
            (
                "1a3c1090-efd1-11eb-9a03-0242ac130003",
                "Order #1000 fulfilled",
            ),
            (
                "2b4d2101-efd1-11eb-9a03-0242ac130003",
                "Order #1000 out for delivery",
            ),
            (
                "3c5e3212-efd1-11eb-9a03-0242ac130003",
                "Order #1000 delivered",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let at = 1_548_855_000 + n as i64 * 86_400;
            s.malomo
                .add_event(&johnny.id, malomo::Malomo::document_event(id, label, at));
        }
    }
    email.to_string()
}

/// One person's timeline as `custsync activity` shows it.
async fn print_timeline(store: &crate::store::Store, email: &str) -> Result<(), AppError> {
    let Ok(email) = crate::model::Email::parse(email) else {
        return Ok(());
    };
    let Some((id, _)) = store.person(&email).await.context("store")? else {
        return Ok(());
    };
    let events = store
        .timeline(crate::sync::DEFAULT_TENANT, id)
        .await
        .context("store")?;
    println!("\nactivity of {email}, newest first (custsync activity {email}):");
    for e in events {
        println!(
            "  {:<22} {:<10} {:<22} {}",
            e.when().unwrap_or_else(|| "-".into()),
            e.provider,
            e.kind,
            e.label
        );
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn print_errors(report: &Report) {
    if report.errors.is_empty() {
        return;
    }
    println!("  not synced ({}):", report.errors.len());
    for e in report.errors.iter().take(5) {
        let who = e.email.as_deref().or(e.remote_id.as_deref()).unwrap_or("?");
        println!("    {:<12} {who}: {}", e.provider, e.error);
    }
}

/// A few first-sight merges that took values from several providers.
async fn print_merges(store: &crate::store::Store) -> Result<(), AppError> {
    let filter = AuditFilter {
        action: Some("merge.initial".into()),
        ..AuditFilter::default()
    };
    let merges = store.audit(&filter).await.context("audit")?;
    let mut shown = 0;
    println!("\nexample merges (one canonical customer from several providers):");
    for m in merges {
        let changes = m["detail"]["changes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut providers: Vec<&str> = changes
            .iter()
            .filter_map(|c| c["provider"].as_str())
            .collect();
        providers.sort();
        providers.dedup();
        if providers.len() < 2 {
            continue;
        }
        println!("  {}", m["email"].as_str().unwrap_or("?"));
        for c in changes.iter().filter(|c| c["field"] != json!("email")) {
            println!(
                "    {:<22} {:<28} from {}",
                c["field"].as_str().unwrap_or("?"),
                c["to"].as_str().unwrap_or("(none)"),
                c["provider"].as_str().unwrap_or("?")
            );
        }
        shown += 1;
        if shown == 3 {
            break;
        }
    }
    Ok(())
}

fn holdings(s: &Sandboxes) -> String {
    format!(
        "store {} / storefront {} / shipping {} / plans {} / email {} customers",
        s.nuvemshop.customers().len(),
        s.ecwid.customers().len(),
        s.malomo.customers().len(),
        s.partially.customers().len(),
        s.sendwithus.customers().len()
    )
}

/// Seeds `n` generated people: each in one to four of the four listable providers,
/// some with their email in other letter case, some with a different
/// phone in each provider (a first-sight conflict the policy decides). Returns `n`.
pub fn seed_generated(s: &Sandboxes, n: usize, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0..n {
        let first = FIRST[rng.random_range(0..FIRST.len())];
        let last = LAST[rng.random_range(0..LAST.len())];
        let domain = DOMAINS[i % DOMAINS.len()];
        let email = format!(
            "{}.{}{}@{domain}",
            ascii(first),
            ascii(last).replace(' ', ""),
            i
        );
        let phone = format!(
            "+55 11 9{:04}-{:04}",
            rng.random_range(0..10_000),
            rng.random_range(0..10_000)
        );
        let mut places: Vec<usize> = (0..4).filter(|_| rng.random_bool(0.4)).collect();
        if places.is_empty() {
            places.push(rng.random_range(0..4));
        }
        for p in places {
            // Some providers hold the address in other letter case: still one person.
            let shown_email = if rng.random_bool(0.15) {
                email.to_uppercase()
            } else {
                email.clone()
            };
            let phone = if rng.random_bool(0.2) {
                format!("+55 21 9{:04}-0000", rng.random_range(0..10_000))
            } else {
                phone.clone()
            };
            match p {
                // The store knows where they live; the storefront whether they want
                // news; shipping and plans their phone; plans their language.
                0 => {
                    let mut record = nuvemshop::seed(&format!("{first} {last}"), &shown_email);
                    record["billing_city"] = json!(if i % 3 == 0 {
                        "São Paulo"
                    } else {
                        "Rio de Janeiro"
                    });
                    record["billing_country"] = json!("BR");
                    s.nuvemshop.insert(record);
                }
                1 => {
                    let mut c = ecwid::Customer::new(&shown_email, Some(first), Some(last));
                    c.accept_marketing = Some(rng.random_bool(0.5));
                    s.ecwid.insert(c);
                }
                2 => {
                    s.malomo.insert(malomo::Customer::new(
                        &shown_email,
                        Some(first),
                        Some(last),
                        Some(&phone),
                    ));
                }
                _ => {
                    let mut c = partially::Customer::new(&shown_email, Some(first), Some(last));
                    c.phone = Some(phone);
                    c.language = Some("pt".into());
                    s.partially.insert(c);
                }
            }
        }
    }
    n
}

fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'ã' | 'á' | 'â' => 'a',
            'é' | 'ê' => 'e',
            'í' => 'i',
            'ó' | 'õ' | 'ô' => 'o',
            'ú' => 'u',
            'ç' => 'c',
            other => other,
        })
        .collect::<String>()
        .to_lowercase()
}
