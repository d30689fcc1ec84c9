//! Groups custsync owns (DESIGN 14): every customer for whom a `[[groups]]` rule holds
//! is a member of its Sendwithus group, every other customer custsync knows is not.
//!
//! The decision is `plan`, a pure function of one customer's canonical fields, the
//! rules and what custsync knows of the memberships (what it set, or read from the
//! provider); `sync` runs it over every linked customer and makes the calls, inside the
//! run so that its writes pass the lease gate. A membership already right costs
//! nothing: a cycle where nothing changed makes no group call. A group not named in
//! `[[groups]]` is never touched.

use std::collections::HashSet;

use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Connected;
use crate::config::GroupRule;
use crate::model::{CustomerId, Field, Projection, ProviderName, RemoteId};
use crate::store::activity::{GroupScope, GroupSubject, Membership};
use crate::store::{Store, StoreError};

/// Customers planned per store batch.
const BATCH: i64 = 500;

/// What the group phase did this run (`groups` in the report).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct GroupReport {
    /// Memberships added (`POST .../groups/{id}`).
    pub added: u64,
    /// Memberships removed (`DELETE .../groups/{id}`).
    pub removed: u64,
    /// Records read to learn memberships custsync did not know yet.
    pub lookups: u64,
    /// Customers planned: those changed since the last pass, or every linked customer
    /// when the rules changed or at the full listing's interval.
    pub planned: u64,
    /// Calls that failed (tried again next cycle).
    pub failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Each failed call: the provider, the record (for Sendwithus, the email) and why;
    /// the engine lists them in the report's `errors`.
    #[serde(skip)]
    pub errors: Vec<(String, RemoteId, String)>,
}

/// True when every condition of `when` holds for `fields`, values compared in the
/// field's normal form. An absent `accepts_marketing` is `false` (a provider's default
/// that the merge leaves out).
pub fn holds(when: &[(Field, String)], fields: &Projection) -> bool {
    when.iter().all(|(field, want)| {
        let have = fields.get(field).or(match field {
            Field::AcceptsMarketing => Some("false"),
            _ => None,
        });
        have.is_some_and(|v| field.normalize(v) == field.normalize(want))
    })
}

/// The calls one customer needs, group ids in rule order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Steps {
    pub add: Vec<String>,
    pub remove: Vec<String>,
    /// Groups the customer should not be in, with no membership known for the record:
    /// read the record's groups, then remove it from those it is in (`resolve`).
    pub ask: Vec<String>,
}

impl Steps {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty() && self.ask.is_empty()
    }
}

/// What one customer needs for `rules` (the rules of its provider). A membership is
/// known only for the record it was learned for: after an email change (a new
/// Sendwithus record) it is learned again. A tombstoned customer needs nothing: its
/// record is being deleted, memberships with it.
pub fn plan(rules: &[&GroupRule], s: &GroupSubject) -> Steps {
    let mut steps = Steps::default();
    if s.tombstoned {
        return steps;
    }
    for rule in rules {
        let want = holds(&rule.when, &s.fields);
        let known = s
            .known
            .get(&rule.group_id)
            .filter(|(remote, _)| *remote == s.remote_id)
            .map(|(_, member)| *member);
        match (want, known) {
            (true, Some(true)) | (false, Some(false)) => {}
            (true, _) => steps.add.push(rule.group_id.clone()),
            (false, Some(true)) => steps.remove.push(rule.group_id.clone()),
            (false, None) => steps.ask.push(rule.group_id.clone()),
        }
    }
    steps
}

/// The `ask` groups the record turned out to be in (to remove), given its groups
/// (`None`: the record does not exist, so it is in none).
pub fn resolve(ask: &[String], groups: Option<&[String]>) -> Vec<String> {
    let held: HashSet<&String> = groups.unwrap_or_default().iter().collect();
    ask.iter().filter(|g| held.contains(g)).cloned().collect()
}

/// Keeps every `[[groups]]` membership in step for every customer linked to the
/// groups' providers. Stops taking customers when `stop` is cancelled.
///
/// A pass plans only the customers changed since the last one (marked in the store by
/// trigger, whatever wrote the change), so a cycle in which nothing changed reads no
/// customer; it plans every customer when the rules changed and at the interval
/// `every` (the full listing's), and a customer whose call failed is planned again by
/// the next pass. What a pass leaves marked is cleared only once every provider with
/// rules was planned to its end (one blocked this run keeps them for the next).
pub async fn sync(
    store: &Store,
    tenant: &str,
    rules: &[GroupRule],
    providers: &[Connected],
    concurrency: usize,
    every: std::time::Duration,
    stop: &CancellationToken,
) -> Result<GroupReport, StoreError> {
    let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
    let with_rules: Vec<&ProviderName> = rules.iter().map(|r| &r.provider).collect();
    store.group_rules_kept(tenant, &with_rules).await?;
    let mut report = GroupReport::default();
    let mut failed = Vec::new();
    let mut every_provider = rules
        .iter()
        .all(|r| providers.iter().any(|c| c.provider.name() == &r.provider));
    for c in providers {
        let name = c.provider.name();
        let mine: Vec<&GroupRule> = rules.iter().filter(|r| &r.provider == name).collect();
        if mine.is_empty() {
            continue;
        }
        // The rules as this build reads them: another build or another rule plans all.
        let digest = format!("{} {mine:?}", env!("CARGO_PKG_VERSION"));
        let scope = store.group_scope(tenant, name, &digest, every).await?;
        let mut after = 0;
        let mut ended = false;
        while !stop.is_cancelled() {
            let batch = store.group_batch(tenant, name, scope, after, BATCH).await?;
            let Some(last) = batch.last() else {
                ended = true;
                break;
            };
            after = last.id.0;
            report.planned += batch.len() as u64;
            let work: Vec<(&GroupSubject, Steps)> = batch
                .iter()
                .map(|s| (s, plan(&mine, s)))
                .filter(|(_, steps)| !steps.is_empty())
                .collect();
            // The calls are made first and then run: a stream mapped by a closure over
            // borrowed items is a future the compiler cannot prove `Send`.
            let calls: Vec<_> = work
                .into_iter()
                .map(|(s, steps)| apply(c, s, steps, stop))
                .collect();
            let done: Vec<Outcome> = futures::stream::iter(calls)
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
            let mut learned = Vec::new();
            for o in done {
                report.added += o.added;
                report.removed += o.removed;
                report.lookups += o.lookups;
                report.failed += o.errors.len() as u64;
                if !o.errors.is_empty() {
                    failed.push(o.customer);
                }
                for e in o.errors {
                    tracing::warn!(provider = %name, error = %e, "group call failed");
                    report.last_error = Some(e.clone());
                    report.errors.push((name.0.clone(), o.remote_id.clone(), e));
                }
                learned.extend(o.learned);
            }
            store.save_memberships(tenant, name, &learned).await?;
        }
        // A stop may have cut a batch's calls short: nothing is taken as planned.
        ended &= !stop.is_cancelled();
        every_provider &= ended;
        if ended && scope == GroupScope::Every {
            store.group_planned_every(tenant, name, &digest).await?;
        }
    }
    if every_provider {
        store.groups_planned(&failed).await?;
    }
    Ok(report)
}

/// What the calls for one customer did.
struct Outcome {
    customer: CustomerId,
    remote_id: RemoteId,
    added: u64,
    removed: u64,
    lookups: u64,
    errors: Vec<String>,
    learned: Vec<Membership>,
}

async fn apply(c: &Connected, s: &GroupSubject, steps: Steps, stop: &CancellationToken) -> Outcome {
    let p = &c.provider;
    let mut o = Outcome {
        customer: s.id,
        remote_id: s.remote_id.clone(),
        added: 0,
        removed: 0,
        lookups: 0,
        errors: Vec::new(),
        learned: Vec::new(),
    };
    let learn = |group: &str, member: bool| Membership {
        customer: s.id,
        group_id: group.to_string(),
        remote_id: s.remote_id.clone(),
        member,
    };
    let mut remove = steps.remove;
    if !steps.ask.is_empty() && !stop.is_cancelled() {
        o.lookups += 1;
        match p.groups_of(&s.remote_id).await {
            Ok(groups) => {
                let in_them = resolve(&steps.ask, groups.as_deref());
                for g in steps.ask.iter().filter(|g| !in_them.contains(g)) {
                    o.learned.push(learn(g, false));
                }
                remove.extend(in_them);
            }
            Err(e) => o.errors.push(e.to_string()),
        }
    }
    for (group, add) in steps
        .add
        .iter()
        .map(|g| (g, true))
        .chain(remove.iter().map(|g| (g, false)))
    {
        if stop.is_cancelled() {
            break;
        }
        let id: &RemoteId = &s.remote_id;
        let result = if add {
            p.add_to_group(id, group).await
        } else {
            p.remove_from_group(id, group).await
        };
        match result {
            Ok(()) => {
                if add {
                    o.added += 1;
                } else {
                    o.removed += 1;
                }
                o.learned.push(learn(group, add));
            }
            Err(e) => o.errors.push(e.to_string()),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CustomerId, ProviderName};
    use std::collections::HashMap;

    fn rule(group: &str, when: Vec<(Field, &str)>) -> GroupRule {
        GroupRule {
            provider: ProviderName("email".into()),
            group_id: group.into(),
            when: when.into_iter().map(|(f, v)| (f, v.to_string())).collect(),
        }
    }

    fn subject(fields: Projection, known: &[(&str, &str, bool)]) -> GroupSubject {
        GroupSubject {
            id: CustomerId(1),
            remote_id: RemoteId("ann@example.com".into()),
            fields,
            tombstoned: false,
            known: known
                .iter()
                .map(|(g, r, m)| (g.to_string(), (RemoteId(r.to_string()), *m)))
                .collect::<HashMap<_, _>>(),
        }
    }

    fn marketing(v: Option<&str>) -> Projection {
        Projection::new()
            .with(Field::Email, Some("ann@example.com"))
            .with(Field::AcceptsMarketing, v)
    }

    const ANN: &str = "ann@example.com";

    #[test]
    fn rules_compare_normalized_values_and_all_must_hold() {
        let p = marketing(Some("TRUE")).with(Field::Attr("tier".into()), Some("gold"));
        assert!(holds(&[(Field::AcceptsMarketing, "true".into())], &p));
        assert!(holds(
            &[
                (Field::AcceptsMarketing, "true".into()),
                (Field::Attr("tier".into()), "gold".into())
            ],
            &p
        ));
        assert!(!holds(
            &[
                (Field::AcceptsMarketing, "true".into()),
                (Field::Attr("tier".into()), "silver".into())
            ],
            &p
        ));
        // Absent accepts_marketing is false; an absent attribute matches nothing.
        assert!(holds(
            &[(Field::AcceptsMarketing, "false".into())],
            &marketing(None)
        ));
        assert!(!holds(
            &[(Field::Attr("tier".into()), "".into())],
            &marketing(None)
        ));
        assert!(holds(
            &[(Field::Country, "br".into())],
            &Projection::new().with(Field::Country, Some("BR"))
        ));
    }

    #[test]
    fn nothing_to_do_when_memberships_are_right() {
        let r = rule("grp_m", vec![(Field::AcceptsMarketing, "true")]);
        let rules = [&r];
        assert!(plan(
            &rules,
            &subject(marketing(Some("true")), &[("grp_m", ANN, true)])
        )
        .is_empty());
        assert!(plan(&rules, &subject(marketing(None), &[("grp_m", ANN, false)])).is_empty());
    }

    #[test]
    fn joins_and_leaves_as_the_rule_starts_and_stops_holding() {
        let r = rule("grp_m", vec![(Field::AcceptsMarketing, "true")]);
        let rules = [&r];
        let join = plan(
            &rules,
            &subject(marketing(Some("true")), &[("grp_m", ANN, false)]),
        );
        assert_eq!(join.add, vec!["grp_m".to_string()]);
        assert!(join.remove.is_empty() && join.ask.is_empty());
        let leave = plan(
            &rules,
            &subject(marketing(Some("false")), &[("grp_m", ANN, true)]),
        );
        assert_eq!(leave.remove, vec!["grp_m".to_string()]);
        assert!(leave.add.is_empty());
    }

    #[test]
    fn unknown_memberships_are_added_or_asked() {
        let a = rule("grp_a", vec![(Field::AcceptsMarketing, "true")]);
        let b = rule("grp_b", vec![(Field::Locale, "de-DE")]);
        let rules = [&a, &b];
        let s = plan(&rules, &subject(marketing(Some("true")), &[]));
        assert_eq!(s.add, vec!["grp_a".to_string()]);
        assert_eq!(s.ask, vec!["grp_b".to_string()]);
        // Known for another record (the email changed): learned again.
        let moved = plan(
            &rules,
            &subject(
                marketing(Some("true")),
                &[
                    ("grp_a", "old@example.com", true),
                    ("grp_b", "old@example.com", false),
                ],
            ),
        );
        assert_eq!(moved.add, vec!["grp_a".to_string()]);
        assert_eq!(moved.ask, vec!["grp_b".to_string()]);
    }

    #[test]
    fn a_tombstoned_customer_needs_no_call() {
        let r = rule("grp_m", vec![(Field::AcceptsMarketing, "true")]);
        let mut s = subject(marketing(Some("true")), &[("grp_m", ANN, false)]);
        s.tombstoned = true;
        assert!(plan(&[&r], &s).is_empty());
    }

    #[test]
    fn resolve_keeps_only_the_groups_the_record_is_in() {
        let ask = vec!["grp_a".to_string(), "grp_b".to_string()];
        let held = vec!["grp_b".to_string(), "grp_other".to_string()];
        assert_eq!(resolve(&ask, Some(&held)), vec!["grp_b".to_string()]);
        assert!(resolve(&ask, None).is_empty());
    }
}

#[cfg(test)]
mod gate_tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{Config, StorePath};
    use crate::providers::http::{gated, WriteGate};
    use crate::sandbox::sendwithus::{Customer, Options, Sendwithus};
    use crate::store::exec;

    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

    struct Closed;
    impl WriteGate for Closed {
        fn may_write(&self) -> futures::future::BoxFuture<'_, bool> {
            Box::pin(async { false })
        }
    }

    /// One customer who accepts marketing, linked to the emulator's record.
    async fn world() -> (Sendwithus, Store, Config, Vec<Connected>) {
        let swu = Sendwithus::start(Options::default()).await.unwrap();
        swu.insert(Customer::new("ann@example.com", Some("Ann"), None));
        let config = Config::from_toml(&format!(
            "[providers.email]\nkind = \"sendwithus\"\nbase_url = \"{}\"\napi_key = \"{}\"\nmax_retries = 0\n\n[[groups]]\nprovider = \"email\"\ngroup_id = \"grp_m\"\nwhen = {{ accepts_marketing = true }}\n",
            swu.base_url(),
            swu.api_key()
        ))
        .unwrap();
        let store = Store::open(&StorePath::Memory, None).await.unwrap();
        sqlx::query("INSERT INTO customers (id, email, fields, updated_at, created_at) VALUES (1, 'ann@example.com', '{\"email\":\"ann@example.com\",\"accepts_marketing\":\"true\"}', 'x', 'x')")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("INSERT INTO links (provider, remote_id, customer_id, snapshot) VALUES ('email', 'ann@example.com', 1, '{}')")
            .execute(store.pool())
            .await
            .unwrap();
        let providers = vec![Connected {
            provider: crate::providers::connect(&config.providers[0]).unwrap(),
            rank: 0,
        }];
        (swu, store, config, providers)
    }

    #[tokio::test]
    async fn group_writes_pass_the_lease_gate() {
        let (swu, store, config, providers) = world().await;
        let closed = closed_pass(&store, &config, &providers).await;
        assert_eq!((closed.added, closed.failed), (0, 1));
        assert!(
            swu.log().writes().is_empty(),
            "nothing sent without the lease"
        );

        let open = pass(&store, &config, &providers, DAY).await;
        assert_eq!(open.added, 1);
        assert_eq!(swu.by_email("ann@example.com").unwrap().groups, ["grp_m"]);
        swu.log().clear();
        let again = pass(&store, &config, &providers, DAY).await;
        assert_eq!(
            again,
            GroupReport::default(),
            "nothing changed: nobody planned"
        );
        assert!(swu.log().is_empty(), "{:?}", swu.log().all());
    }

    #[tokio::test]
    async fn a_stopped_run_reads_no_activity_and_makes_no_group_call() {
        let (swu, store, config, providers) = world().await;
        let stop = CancellationToken::new();
        stop.cancel();
        let groups = sync(&store, "default", &config.groups, &providers, 2, DAY, &stop)
            .await
            .unwrap();
        assert_eq!(groups, GroupReport::default());
        let read = crate::sync::activity::poll(&store, "default", &providers, 10, None, &stop)
            .await
            .unwrap();
        assert_eq!(read.requests, 0);
        assert!(swu.log().is_empty(), "{:?}", swu.log().all());
    }

    async fn pass(
        store: &Store,
        config: &Config,
        providers: &[Connected],
        every: std::time::Duration,
    ) -> GroupReport {
        let stop = CancellationToken::new();
        sync(store, "default", &config.groups, providers, 2, every, &stop)
            .await
            .unwrap()
    }

    /// A pass whose writes the lease gate refuses.
    async fn closed_pass(store: &Store, config: &Config, providers: &[Connected]) -> GroupReport {
        let stop = CancellationToken::new();
        gated(
            Arc::new(Closed),
            sync(store, "default", &config.groups, providers, 2, DAY, &stop),
        )
        .await
        .unwrap()
    }

    async fn dirty(store: &Store) -> Vec<i64> {
        sqlx::query_scalar("SELECT customer_id FROM groups_dirty ORDER BY customer_id")
            .fetch_all(store.pool())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_pass_plans_only_the_customers_changed_since_the_last() {
        let (swu, store, config, providers) = world().await;
        swu.insert(Customer::new("bo@example.com", Some("Bo"), None));
        exec(&store, "INSERT INTO customers (id, email, fields, updated_at, created_at) VALUES (2, 'bo@example.com', '{\"email\":\"bo@example.com\"}', 'x', 'x')").await;
        exec(&store, "INSERT INTO links (provider, remote_id, customer_id, snapshot) VALUES ('email', 'bo@example.com', 2, '{}')").await;

        // Before any pass, nothing is marked: the first plans everyone anyway.
        assert!(dirty(&store).await.is_empty());
        // The first pass plans everyone; Ann joins, Bo's membership is looked up.
        let first = pass(&store, &config, &providers, DAY).await;
        assert_eq!((first.planned, first.added, first.lookups), (2, 1, 1));
        assert!(dirty(&store).await.is_empty());
        swu.log().clear();
        let idle = pass(&store, &config, &providers, DAY).await;
        assert_eq!(idle, GroupReport::default());

        // Bo now accepts marketing: only Bo is planned, and joins.
        exec(&store, "UPDATE customers SET fields = '{\"email\":\"bo@example.com\",\"accepts_marketing\":\"true\"}' WHERE id = 2").await;
        assert_eq!(dirty(&store).await, [2]);
        let changed = pass(&store, &config, &providers, DAY).await;
        assert_eq!((changed.planned, changed.added), (1, 1));
        assert_eq!(swu.by_email("bo@example.com").unwrap().groups, ["grp_m"]);

        // What a plan does not read marks nobody; what it reads marks its customer.
        exec(
            &store,
            "UPDATE links SET observed = '{}', listed_key = 5 WHERE customer_id = 1",
        )
        .await;
        exec(
            &store,
            "UPDATE customers SET updated_at = 'y', fields = fields WHERE id = 1",
        )
        .await;
        assert!(dirty(&store).await.is_empty());
        exec(&store, "UPDATE links SET gone = 1 WHERE customer_id = 2").await;
        exec(
            &store,
            "UPDATE customers SET tombstoned_at = 'y' WHERE id = 1",
        )
        .await;
        assert_eq!(dirty(&store).await, [1, 2]);
        exec(&store, "DELETE FROM groups_dirty").await;
        exec(&store, "UPDATE links SET gone = 0 WHERE customer_id = 2").await;
        exec(
            &store,
            "UPDATE links SET snapshot = NULL WHERE customer_id = 1",
        )
        .await;
        assert_eq!(dirty(&store).await, [1, 2]);
        exec(&store, "DELETE FROM groups_dirty").await;
        exec(&store, "DELETE FROM links WHERE customer_id = 1").await;
        // A new customer is marked once linked (a plan reads only linked customers).
        exec(&store, "INSERT INTO customers (id, email, fields, updated_at, created_at) VALUES (3, 'cy@example.com', '{}', 'x', 'x')").await;
        assert_eq!(dirty(&store).await, [1]);
        exec(
            &store,
            "INSERT INTO links (provider, remote_id, customer_id) VALUES ('shop', 's3', 3)",
        )
        .await;
        assert_eq!(dirty(&store).await, [1, 3]);
    }

    #[tokio::test]
    async fn a_failed_call_new_rules_and_the_full_interval_plan_again() {
        let (swu, store, config, providers) = world().await;
        let closed = closed_pass(&store, &config, &providers).await;
        assert_eq!((closed.planned, closed.failed), (1, 1));
        assert_eq!(dirty(&store).await, [1], "kept for the next pass");
        let retried = pass(&store, &config, &providers, DAY).await;
        assert_eq!((retried.planned, retried.added), (1, 1));
        assert_eq!(pass(&store, &config, &providers, DAY).await.planned, 0);

        // Another rule: everyone is planned again, once.
        let mut other = config.clone();
        other.groups[0].group_id = "grp_n".into();
        let renamed = pass(&store, &other, &providers, DAY).await;
        assert_eq!((renamed.planned, renamed.added), (1, 1));
        assert_eq!(pass(&store, &other, &providers, DAY).await.planned, 0);

        // Past the full interval: everyone again, and nothing to send.
        swu.log().clear();
        let full = pass(&store, &other, &providers, std::time::Duration::ZERO).await;
        assert_eq!((full.planned, full.added, full.removed), (1, 0, 0));
        assert!(swu.log().writes().is_empty());

        // A rule's provider blocked this run: what changed stays marked for it.
        exec(&store, "UPDATE customers SET fields = '{}' WHERE id = 1").await;
        let none = pass(&store, &other, &[], DAY).await;
        assert_eq!(none.planned, 0);
        assert_eq!(dirty(&store).await, [1]);
        let left = pass(&store, &other, &providers, DAY).await;
        assert_eq!((left.planned, left.removed), (1, 1));

        // The rules taken away, a change, the same rules given back: everyone again.
        let mut none = other.clone();
        none.groups.clear();
        assert_eq!(pass(&store, &none, &providers, DAY).await.planned, 0);
        exec(
            &store,
            "UPDATE customers SET fields = '{\"accepts_marketing\":\"true\"}' WHERE id = 1",
        )
        .await;
        assert_eq!(pass(&store, &none, &providers, DAY).await.planned, 0);
        assert!(dirty(&store).await.is_empty(), "no pass would clear them");
        let back = pass(&store, &other, &providers, DAY).await;
        assert_eq!((back.planned, back.added), (1, 1));
    }
}
