//! The three-way merge: one canonical customer from what each provider shows of it,
//! field by field, against the snapshot each provider's record was last seen or
//! written as. A pure function: no I/O, no clock.

use chrono::{DateTime, Utc};

use crate::config::ConflictPolicy;
use crate::model::{lift, Field, Projection};

/// One provider's record of the customer, as listed this cycle.
#[derive(Debug, Clone)]
pub struct Side<'a> {
    /// Index in `[sync].priority` (0 = highest).
    pub rank: usize,
    /// The snapshot: what custsync last saw or wrote. `None` on first sight.
    pub base: Option<&'a Projection>,
    pub current: &'a Projection,
    /// The remote `updated_at`, or when custsync first saw this version.
    pub time: DateTime<Utc>,
}

/// A field two providers changed differently since their snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub field: Field,
    pub winner_rank: usize,
    pub value: Option<String>,
    pub losers: Vec<(usize, Option<String>)>,
}

/// A change applied to the canonical record.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub field: Field,
    pub from: Option<String>,
    pub to: Option<String>,
    pub rank: usize,
    /// An edit since a snapshot (false: a value from a record seen for the first time).
    pub edit: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Merged {
    pub canonical: Projection,
    pub changes: Vec<Change>,
    pub conflicts: Vec<Conflict>,
}

#[derive(Debug, Clone)]
struct Candidate {
    field: Field,
    value: Option<String>,
    rank: usize,
    time: DateTime<Utc>,
    edit: bool,
}

/// Merges the sides into `canonical`. `canonical_time` is when the canonical record last
/// changed; `None` for a customer seen for the first time (no canonical record yet).
///
/// - A field differs from its base only if that provider changed it. Changes from
///   different providers to different fields all apply.
/// - The same field changed differently by two providers is a conflict: `latest` takes
///   the later time (ties: priority), `priority` the higher-priority provider.
/// - A record seen for the first time fills what the canonical record lacks; a value
///   it holds that differs from the canonical one wins under `latest` only when it is
///   newer than the canonical record. Such first-sight choices are not conflicts.
pub fn merge(
    canonical: &Projection,
    canonical_time: Option<DateTime<Utc>>,
    sides: &[Side<'_>],
    policy: ConflictPolicy,
) -> Merged {
    let mut candidates = Vec::new();
    for side in sides {
        let (edit, fields) = match side.base {
            Some(base) => (true, base.diff(side.current)),
            None => (false, side.current.iter().map(|(f, _)| f.clone()).collect()),
        };
        for field in fields {
            for (cf, value) in lift(&field, side.current.get(&field), canonical) {
                let same = match &value {
                    Some(v) => canonical
                        .get(&cf)
                        .is_some_and(|c| cf.normalize(c) == cf.normalize(v)),
                    None => canonical.get(&cf).is_none(),
                };
                if !same {
                    candidates.push(Candidate {
                        field: cf,
                        value,
                        rank: side.rank,
                        time: side.time,
                        edit,
                    });
                }
            }
        }
    }
    candidates.sort_by(|a, b| a.field.cmp(&b.field));

    let mut out = Merged {
        canonical: canonical.clone(),
        ..Merged::default()
    };
    let mut rest = candidates.as_slice();
    while let Some(first) = rest.first() {
        let n = rest.iter().take_while(|c| c.field == first.field).count();
        let (group, tail) = rest.split_at(n);
        rest = tail;
        resolve(group, canonical, canonical_time, policy, &mut out);
    }
    out
}

fn resolve(
    group: &[Candidate],
    canonical: &Projection,
    canonical_time: Option<DateTime<Utc>>,
    policy: ConflictPolicy,
    out: &mut Merged,
) {
    let field = group[0].field.clone();
    let edits: Vec<&Candidate> = group.iter().filter(|c| c.edit).collect();
    let winner = if !edits.is_empty() {
        let winner = pick(&edits, policy);
        let norm = |c: &Candidate| c.value.as_deref().map(|v| field.normalize(v));
        let losers: Vec<(usize, Option<String>)> = edits
            .iter()
            .filter(|c| norm(c) != norm(winner))
            .map(|c| (c.rank, c.value.clone()))
            .collect();
        if !losers.is_empty() {
            out.conflicts.push(Conflict {
                field: field.clone(),
                winner_rank: winner.rank,
                value: winner.value.clone(),
                losers,
            });
        }
        Some(winner)
    } else {
        let firsts: Vec<&Candidate> = group.iter().filter(|c| c.value.is_some()).collect();
        if firsts.is_empty() {
            None
        } else {
            let winner = pick(&firsts, policy);
            let fills_gap = canonical_time.is_none() || canonical.get(&field).is_none();
            let newer =
                policy == ConflictPolicy::Latest && canonical_time.is_some_and(|t| winner.time > t);
            (fills_gap || newer).then_some(winner)
        }
    };
    if let Some(w) = winner {
        out.changes.push(Change {
            field: field.clone(),
            from: canonical.get(&field).map(str::to_string),
            to: w.value.clone(),
            rank: w.rank,
            edit: w.edit,
        });
        out.canonical.set(field, w.value.clone());
    }
}

fn pick<'a>(cands: &[&'a Candidate], policy: ConflictPolicy) -> &'a Candidate {
    let best = match policy {
        ConflictPolicy::Latest => cands
            .iter()
            .max_by(|a, b| a.time.cmp(&b.time).then(b.rank.cmp(&a.rank))),
        ConflictPolicy::Priority => cands.iter().min_by_key(|c| c.rank),
    };
    best.copied().unwrap_or(cands[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn p(pairs: &[(Field, &str)]) -> Projection {
        pairs
            .iter()
            .map(|(f, v)| (f.clone(), v.to_string()))
            .collect()
    }

    #[test]
    fn edits_to_different_fields_both_apply() {
        let canon = p(&[
            (Field::Email, "a@x.co"),
            (Field::LastName, "Rose"),
            (Field::Phone, "111"),
        ]);
        let base_m = p(&[
            (Field::Email, "a@x.co"),
            (Field::LastName, "Rose"),
            (Field::Phone, "111"),
        ]);
        let cur_m = p(&[
            (Field::Email, "a@x.co"),
            (Field::LastName, "Stone"),
            (Field::Phone, "111"),
        ]);
        let base_n = p(&[
            (Field::Email, "a@x.co"),
            (Field::FullName, "Johnny Rose"),
            (Field::Phone, "111"),
        ]);
        let cur_n = p(&[
            (Field::Email, "a@x.co"),
            (Field::FullName, "Johnny Rose"),
            (Field::Phone, "222"),
        ]);
        let sides = [
            Side {
                rank: 0,
                base: Some(&base_m),
                current: &cur_m,
                time: t(10),
            },
            Side {
                rank: 1,
                base: Some(&base_n),
                current: &cur_n,
                time: t(5),
            },
        ];
        let m = merge(&canon, Some(t(0)), &sides, ConflictPolicy::Latest);
        assert_eq!(m.canonical.get(&Field::LastName), Some("Stone"));
        assert_eq!(m.canonical.get(&Field::Phone), Some("222"));
        assert!(m.conflicts.is_empty());
    }

    #[test]
    fn same_field_conflict_latest_and_priority() {
        let canon = p(&[(Field::Phone, "1")]);
        let base = p(&[(Field::Phone, "1")]);
        let a = p(&[(Field::Phone, "2")]);
        let b = p(&[(Field::Phone, "3")]);
        let sides = [
            Side {
                rank: 0,
                base: Some(&base),
                current: &a,
                time: t(1),
            },
            Side {
                rank: 1,
                base: Some(&base),
                current: &b,
                time: t(2),
            },
        ];
        let latest = merge(&canon, Some(t(0)), &sides, ConflictPolicy::Latest);
        assert_eq!(latest.canonical.get(&Field::Phone), Some("3"));
        assert_eq!(latest.conflicts.len(), 1);
        let prio = merge(&canon, Some(t(0)), &sides, ConflictPolicy::Priority);
        assert_eq!(prio.canonical.get(&Field::Phone), Some("2"));
    }

    #[test]
    fn first_sight_fills_gaps_without_conflicts() {
        let a = p(&[(Field::Email, "a@x.co"), (Field::FirstName, "Ann")]);
        let b = p(&[
            (Field::Email, "A@x.co"),
            (Field::FullName, "Anne Lee"),
            (Field::Phone, "5"),
        ]);
        let sides = [
            Side {
                rank: 0,
                base: None,
                current: &a,
                time: t(1),
            },
            Side {
                rank: 1,
                base: None,
                current: &b,
                time: t(2),
            },
        ];
        let m = merge(&Projection::new(), None, &sides, ConflictPolicy::Priority);
        assert_eq!(m.canonical.get(&Field::FirstName), Some("Ann"));
        assert_eq!(m.canonical.get(&Field::LastName), Some("Lee"));
        assert_eq!(m.canonical.get(&Field::Phone), Some("5"));
        assert!(m.conflicts.is_empty());
    }

    #[test]
    fn a_cleared_field_is_an_edit() {
        let canon = p(&[(Field::Phone, "1")]);
        let base = p(&[(Field::Phone, "1")]);
        let cur = Projection::new();
        let sides = [Side {
            rank: 0,
            base: Some(&base),
            current: &cur,
            time: t(1),
        }];
        let m = merge(&canon, Some(t(0)), &sides, ConflictPolicy::Latest);
        assert_eq!(m.canonical.get(&Field::Phone), None);
    }

    #[test]
    fn a_formatting_change_is_not_an_edit() {
        let canon = p(&[(Field::Phone, "555-555-5555")]);
        let base = p(&[(Field::Phone, "555-555-5555")]);
        let cur = p(&[(Field::Phone, "(555) 555 5555")]);
        let sides = [Side {
            rank: 0,
            base: Some(&base),
            current: &cur,
            time: t(1),
        }];
        let m = merge(&canon, Some(t(0)), &sides, ConflictPolicy::Latest);
        assert!(m.changes.is_empty());
    }
}
