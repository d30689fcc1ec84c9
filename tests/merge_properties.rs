//! Property tests of the pure merge and plan: random edits in random providers
//! converge, edits to different fields all survive, and a second plan after a
//! successful push is empty.

use chrono::{DateTime, TimeZone, Utc};
use custsync::config::ConflictPolicy;
use custsync::model::{project, Field, FieldSet, Projection, ProviderName, RemoteId};
use custsync::providers::{Capabilities, ListStyle};
use custsync::sync::merge::{merge, Side};
use custsync::sync::plan::{plan, LinkState, Op, Target};
use proptest::prelude::*;

const SETS: [FieldSet; 3] = [
    // Malomo-like
    FieldSet {
        fields: &[
            Field::Email,
            Field::FirstName,
            Field::LastName,
            Field::Phone,
        ],
        attributes: false,
        defaults: &[],
        max_chars: &[],
    },
    // Nuvemshop-like: one name field, attributes
    FieldSet {
        fields: &[Field::Email, Field::FullName, Field::Phone, Field::Note],
        attributes: true,
        defaults: &[],
        max_chars: &[],
    },
    // Partial.ly-like: language as a lossy view of the locale
    FieldSet {
        fields: &[
            Field::Email,
            Field::FirstName,
            Field::LastName,
            Field::Phone,
            Field::Language,
        ],
        attributes: false,
        defaults: &[],
        max_chars: &[],
    },
];

const CAPS: Capabilities = Capabilities {
    list: ListStyle::Pages,
    incremental: false,
    create: true,
    update: true,
    delete: true,
    lookup: true,
    updated_at: true,
};

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
}

/// An edit: provider index, field index within its set (or an attribute), new value.
#[derive(Debug, Clone)]
struct Edit {
    provider: usize,
    field: usize,
    value: Option<String>,
}

fn value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        4 => "[a-c]{1,3}( [a-c]{1,2})?".prop_map(Some),
    ]
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        (0..3usize, 1..6usize, value()).prop_map(|(provider, field, value)| Edit {
            provider,
            field,
            value,
        }),
        0..6,
    )
}

fn start() -> impl Strategy<Value = Projection> {
    (
        value(),
        value(),
        value(),
        prop::option::of("[0-9]{3}"),
        prop::option::of(prop_oneof!["de-DE", "en", "pt-BR"]),
    )
        .prop_map(|(first, last, note, phone, locale)| {
            Projection::new()
                .with(Field::Email, Some("ann@example.com"))
                .with(Field::FirstName, first)
                .with(Field::LastName, last)
                .with(Field::Note, note)
                .with(Field::Phone, phone)
                .with(Field::Locale, locale)
                .with(Field::Attr("tier".into()), Some("gold"))
        })
}

/// Applies an edit to a provider's record in its own projection.
fn apply(record: &mut Projection, set: &FieldSet, e: &Edit) {
    let field = match set.fields.get(e.field) {
        Some(f) => f.clone(),
        None if set.attributes => Field::Attr("tier".into()),
        None => return,
    };
    let value = match (&field, &e.value) {
        (Field::Phone, Some(v)) => Some(format!("{}", v.len() * 111)),
        (Field::Language, Some(v)) => Some(v.chars().take(2).collect()),
        (_, v) => v.clone(),
    };
    record.set(field, value);
}

struct World {
    records: Vec<Projection>,
    snapshots: Vec<Projection>,
    names: Vec<ProviderName>,
    ids: Vec<RemoteId>,
}

impl World {
    fn converged(canonical: &Projection) -> World {
        let records: Vec<Projection> = SETS.iter().map(|s| project(canonical, s)).collect();
        World {
            snapshots: records.clone(),
            records,
            names: (0..3).map(|i| ProviderName(format!("p{i}"))).collect(),
            ids: (0..3).map(|i| RemoteId(format!("r{i}"))).collect(),
        }
    }

    /// One cycle: merge what changed, plan, push every op (the provider stores the
    /// payload and the snapshot becomes it). Returns the new canonical and the ops.
    fn cycle(
        &mut self,
        canonical: &Projection,
        policy: ConflictPolicy,
        time: i64,
    ) -> (Projection, usize) {
        let sides: Vec<Side<'_>> = (0..3)
            .map(|i| Side {
                rank: i,
                base: Some(&self.snapshots[i]),
                current: &self.records[i],
                time: t(time + i as i64),
            })
            .collect();
        let merged = merge(canonical, Some(t(0)), &sides, policy).canonical;
        // After the merge every observed record is the new snapshot.
        self.snapshots = self.records.clone();
        let targets: Vec<Target<'_>> = (0..3)
            .map(|i| Target {
                provider: &self.names[i],
                caps: CAPS,
                fields: &SETS[i],
                link: Some(LinkState {
                    remote_id: &self.ids[i],
                    snapshot: Some(&self.snapshots[i]),
                    gone: false,
                }),
                writable: true,
                creates_and_deletes: true,
            })
            .collect();
        let ops = plan(&merged, false, &targets);
        let n = ops.len();
        let pushed: Vec<(usize, Projection)> = ops
            .into_iter()
            .filter_map(|(name, op)| match op {
                Op::Update { payload, .. } => {
                    Some((self.names.iter().position(|x| x == name)?, payload))
                }
                _ => None,
            })
            .collect();
        for (i, payload) in pushed {
            self.records[i] = payload.clone();
            self.snapshots[i] = payload;
        }
        (merged, n)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_edits_converge_and_settle(c0 in start(), es in edits(), latest in any::<bool>()) {
        let policy = if latest { ConflictPolicy::Latest } else { ConflictPolicy::Priority };
        let mut w = World::converged(&c0);
        for e in &es {
            apply(&mut w.records[e.provider], &SETS[e.provider], e);
        }
        let (c1, _) = w.cycle(&c0, policy, 10);
        // Converged: every provider holds the canonical record in its projection.
        for (i, set) in SETS.iter().enumerate() {
            let stale = set.stale(&project(&c1, set), &w.records[i]);
            prop_assert!(stale.is_empty(), "provider {i} stale in {stale:?}: {:?} vs {:?}", w.records[i], project(&c1, set));
        }
        // Settled: a second cycle with no outside change changes and plans nothing.
        let (c2, ops) = w.cycle(&c1, policy, 20);
        prop_assert_eq!(ops, 0);
        prop_assert_eq!(c2, c1);
    }

    #[test]
    fn edits_to_different_fields_all_survive(c0 in start(), phone in "[0-9]{4}", note in "[a-z]{4}", last in "[a-z]{5}") {
        // Three providers edit three different fields in the same cycle.
        let mut w = World::converged(&c0);
        w.records[0].set(Field::LastName, Some(last.clone()));
        w.records[1].set(Field::Phone, Some(phone.clone()));
        w.records[1].set(Field::Note, Some(note.clone()));
        w.records[2].set(Field::Language, Some("fr".to_string()));
        let (c1, _) = w.cycle(&c0, ConflictPolicy::Latest, 10);
        prop_assert_eq!(c1.get(&Field::LastName), Some(last.as_str()));
        prop_assert_eq!(c1.get(&Field::Phone), Some(phone.as_str()));
        prop_assert_eq!(c1.get(&Field::Note), Some(note.as_str()));
        prop_assert_eq!(c1.get(&Field::Locale), Some("fr"));
        prop_assert_eq!(c1.get(&Field::FirstName), c0.get(&Field::FirstName));
    }
}
