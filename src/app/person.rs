//! The commands about one person: `forget` (erasure everywhere) and `activity` (their
//! events across providers).

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::{connect_all, open_store, provider_reason, take_lease, AppError};
use crate::config::{Config, ConfigError};
use crate::model::{CustomerId, Email, ProviderName, RemoteId};
use crate::providers::http::{gated, WriteGate};
use crate::providers::Provider;
use crate::sync::Connected;

/// How `forget` was asked to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct ForgetOptions {
    /// Look up and print what would be erased; write nothing anywhere.
    pub dry_run: bool,
    /// Erase without asking, also on a terminal.
    pub yes: bool,
}

/// What `forget` found of the person in one provider (by link and by email lookup).
enum Found {
    /// The lookup failed: what this provider holds is unknown.
    LookupFailed(String),
    Nothing,
    /// Records that the provider's API cannot delete: left to the user.
    CannotDelete(Vec<RemoteId>),
    ToDelete(Vec<RemoteId>),
}

/// `forget EMAIL`: finds every record of the person in every provider (by link and by
/// email), then deletes them where the provider can delete and purges the person
/// locally. With `dry_run`, prints that plan and writes nothing. On a terminal, without
/// `yes`, shows the plan and asks first; off a terminal it proceeds, so that scripts
/// need no `--yes`. Exit 1 when a lookup or a delete failed, or the user said no.
pub async fn forget(
    config: &Config,
    key: Option<&str>,
    tenant: &str,
    text: &str,
    opts: ForgetOptions,
) -> Result<ExitCode, AppError> {
    let email = parse_email(text)?;
    let providers = connect_all(config)?;
    // A dry run leaves a missing store missing: there is nothing in it to purge.
    let store = if opts.dry_run {
        crate::store::Store::open_existing(&config.store.path, key)
            .await
            .context("store")?
    } else {
        Some(open_store(&config.store.path, key).await?)
    };
    let known = match &store {
        Some(store) => store.person(&email).await.context("store")?,
        None => None,
    };
    let links = known
        .as_ref()
        .map(|(_, l)| l.as_slice())
        .unwrap_or_default();
    // A real erasure is a write of the tenant: it runs under its lease, from the
    // lookups on, and every delete it sends is fenced by it (DESIGN 4c).
    let lease = match (&store, opts.dry_run) {
        (Some(store), false) => match take_lease(config, store, tenant).await? {
            Ok(lease) => Some(Arc::new(lease)),
            Err(code) => {
                store.close().await;
                return Ok(code);
            }
        },
        _ => None,
    };
    let found = find(&providers, &email, links).await;
    let lookup_failed = found.iter().any(|f| matches!(f, Found::LookupFailed(_)));
    let ask = !opts.dry_run && !opts.yes && std::io::stdin().is_terminal();
    if opts.dry_run || ask {
        print_plan(&providers, &found);
        let local = match (&store, &known) {
            (Some(store), Some((id, links))) => Some((
                *id,
                links.len(),
                store.erasure_extent(*id).await.context("store")?,
            )),
            _ => None,
        };
        println!("{}", local_plan(local));
    }
    if opts.dry_run {
        if let Some(store) = store {
            store.close().await;
        }
        println!("nothing was erased (dry run)");
        return Ok(exit(lookup_failed));
    }
    let store = match store {
        Some(store) => store,
        None => open_store(&config.store.path, key).await?,
    };
    if ask {
        let question = format!("Erase {} everywhere? [y/N] ", email.as_str());
        let yes = tokio::task::spawn_blocking(move || {
            confirm(
                &question,
                &mut std::io::stdin().lock(),
                &mut std::io::stderr(),
            )
        })
        .await
        .context("reading the answer")?
        .context("reading the answer")?;
        if !yes {
            if let Some(lease) = &lease {
                lease.release().await;
            }
            store.close().await;
            eprintln!("custsync: nothing was erased");
            return Ok(ExitCode::from(1));
        }
    }
    let mut failed = lookup_failed;
    let erasures = async {
        for (c, found) in providers.iter().zip(&found) {
            failed |= !erase(c.provider.as_ref(), found).await;
        }
    };
    match &lease {
        Some(lease) => gated(lease.clone() as Arc<dyn WriteGate>, erasures).await,
        None => erasures.await,
    }
    let run = store.begin_run("forget").await.context("store")?;
    store.forget(run, &email).await.context("store")?;
    let status = if failed { "failed" } else { "converged" };
    store
        .finish_run(run, status, r#"{"forget":true}"#)
        .await
        .context("store")?;
    if let Some(lease) = &lease {
        lease.release().await;
    }
    store.close().await;
    println!("custsync: the person is purged locally; only a hash of the email is kept");
    Ok(exit(failed))
}

/// Finds the person's records in every provider: those custsync linked, and those a
/// lookup by email finds. Sends no write.
async fn find(
    providers: &[Connected],
    email: &Email,
    links: &[(ProviderName, RemoteId)],
) -> Vec<Found> {
    let mut out = Vec::new();
    for c in providers {
        let p = &c.provider;
        let caps = p.capabilities();
        let mut ids: Vec<RemoteId> = links
            .iter()
            .filter(|(n, _)| n == p.name())
            .map(|(_, id)| id.clone())
            .collect();
        if caps.lookup {
            match p.lookup(email).await {
                Ok(records) => ids.extend(records.into_iter().map(|r| r.id)),
                Err(e) => {
                    out.push(Found::LookupFailed(provider_reason(p.name(), &e)));
                    continue;
                }
            }
        }
        ids.sort();
        ids.dedup();
        let found = if ids.is_empty() {
            Found::Nothing
        } else if caps.delete {
            Found::ToDelete(ids)
        } else {
            Found::CannotDelete(ids)
        };
        out.push(found);
    }
    out
}

/// Sends the deletes of one provider and prints each outcome; false if one failed.
async fn erase(p: &dyn Provider, found: &Found) -> bool {
    let (name, kind) = (p.name(), p.kind());
    match found {
        Found::LookupFailed(e) => {
            println!("{name} ({kind}): lookup FAILED, nothing deleted there: {e}");
            false
        }
        Found::Nothing => {
            println!("{name} ({kind}): not found");
            true
        }
        Found::CannotDelete(ids) => {
            println!(
                "{name} ({kind}): holds {} record(s) but its API cannot delete: erase them by hand ({})",
                ids.len(),
                join(ids)
            );
            true
        }
        Found::ToDelete(ids) => {
            let mut ok = true;
            for id in ids {
                match p.delete(id).await {
                    Ok(()) => println!("{name} ({kind}): deleted {id}"),
                    Err(e) => {
                        ok = false;
                        let e = provider_reason(name, &e);
                        println!("{name} ({kind}): delete of {id} FAILED: {e}");
                    }
                }
            }
            ok
        }
    }
}

/// The plan of a forget, one line per provider (before the question, or as a dry run).
fn print_plan(providers: &[Connected], found: &[Found]) {
    for (c, f) in providers.iter().zip(found) {
        let line = match f {
            Found::LookupFailed(e) => format!("lookup FAILED: {e}"),
            Found::Nothing => "not found".to_string(),
            Found::CannotDelete(ids) => format!(
                "holds {} record(s) but its API cannot delete: erase them by hand ({})",
                ids.len(),
                join(ids)
            ),
            Found::ToDelete(ids) => format!("would delete {}", join(ids)),
        };
        println!("{} ({}): {line}", c.provider.name(), c.provider.kind());
    }
}

/// What the local purge would remove of a known customer: (id, links, (outbox, audit)).
fn local_plan(local: Option<(CustomerId, usize, (i64, i64))>) -> String {
    match local {
        Some((id, links, (ops, audit))) => format!(
            "locally: would purge customer #{} (its record, {links} link(s), {ops} outbox operation(s), the details of {audit} audit entr{}, and the email in run reports); only a hash of the email is kept",
            id.0,
            if audit == 1 { "y" } else { "ies" }
        ),
        None => "locally: custsync holds nothing of this person; a hash of the email would be kept so they are not imported again".to_string(),
    }
}

/// Asks `question` on `output` and reads one line of `input`: true for y or yes (any
/// case), false for anything else, an empty line or the end of the input.
pub fn confirm(
    question: &str,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> std::io::Result<bool> {
    output.write_all(question.as_bytes())?;
    output.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

fn join(ids: &[RemoteId]) -> String {
    ids.iter()
        .map(|i| i.0.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn exit(failed: bool) -> ExitCode {
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `activity EMAIL`: the person's timeline as the store holds it (DESIGN 14), every
/// source, newest first: a table, or JSON lines with `--json`. `--refresh` reads the
/// person's streams first, with reads only (no lease needed: it writes nothing to any
/// provider and only the activity tables locally); exit 1 when a read failed.
pub async fn activity(
    config: &Config,
    key: Option<&str>,
    tenant: &str,
    text: &str,
    json: bool,
    refresh: bool,
) -> Result<ExitCode, AppError> {
    use crate::sync::activity;
    let email =
        Email::parse(text).map_err(|e| ConfigError::new("EMAIL", format!("{e}: {text:?}")))?;
    let store = super::inspect::open_existing_store(&config.store.path, key).await?;
    let Some((customer, _)) = store.person(&email).await.context("store")? else {
        store.close().await;
        eprintln!("custsync: no customer with this email is known");
        return Ok(ExitCode::SUCCESS);
    };
    let mut failed = false;
    if refresh {
        let providers = connect_all(config)?;
        let stop = tokio_util::sync::CancellationToken::new();
        let read = activity::poll(&store, tenant, &providers, 1, Some(customer), &stop)
            .await
            .context("store")?;
        if let Some(e) = &read.last_error {
            failed = true;
            eprintln!("custsync: {e}");
        }
    }
    let events = store.timeline(tenant, customer).await.context("store")?;
    store.close().await;
    if json {
        for e in &events {
            let occurred_at = e.when();
            println!(
                "{}",
                serde_json::json!({"provider": e.provider, "id": e.id, "type": e.kind,
                    "occurred_at": occurred_at, "label": e.label, "raw": e.raw})
            );
        }
    } else {
        print!("{}", timeline_table(&events));
    }
    Ok(exit(failed))
}

/// The person named on the command line; exit 2 when `text` is no email.
fn parse_email(text: &str) -> Result<Email, AppError> {
    Ok(Email::parse(text).map_err(|e| ConfigError::new("EMAIL", format!("{e}: {text:?}")))?)
}

/// The timeline as a table a person reads.
fn timeline_table(events: &[crate::store::activity::TimelineEvent]) -> String {
    if events.is_empty() {
        return "no activity stored for this person (try --refresh)\n".to_string();
    }
    let mut out = format!(
        "{:<20}  {:<12}  {:<24}  {}\n",
        "when", "provider", "type", "label"
    );
    for e in events {
        let when = e
            .occurred_at
            .as_deref()
            .and_then(crate::store::parse_time)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<20}  {:<12}  {:<24}  {}\n",
            when, e.provider, e.kind, e.label
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(typed: &str) -> (bool, String) {
        let mut out = Vec::new();
        let yes = confirm(
            "Erase ann@example.com everywhere? [y/N] ",
            &mut typed.as_bytes(),
            &mut out,
        )
        .unwrap();
        (yes, String::from_utf8(out).unwrap())
    }

    #[test]
    fn forget_asks_and_erases_only_on_yes() {
        for typed in ["y\n", "Y\n", "yes\n", " YES \n", "y"] {
            let (yes, asked) = ask(typed);
            assert!(yes, "{typed:?}");
            assert_eq!(asked, "Erase ann@example.com everywhere? [y/N] ");
        }
        for typed in ["", "\n", "n\n", "no\n", "yep\n", "maybe y\n"] {
            assert!(!ask(typed).0, "{typed:?} is not a yes");
        }
    }

    #[test]
    fn the_local_plan_says_what_is_purged() {
        let known = local_plan(Some((CustomerId(7), 3, (2, 1))));
        assert!(known.contains("customer #7"), "{known}");
        assert!(known.contains("3 link(s)") && known.contains("2 outbox operation(s)"));
        assert!(known.contains("1 audit entry"), "{known}");
        assert!(local_plan(None).contains("holds nothing"));
    }
}
