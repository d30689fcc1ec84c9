//! Activity and group memberships in the store (DESIGN 14): each person's events,
//! where each of their streams was last read to, and what custsync knows of the
//! memberships of the groups it owns.
//!
//! Owns the SQL of the `activity`, `activity_marks` and `group_members` tables. Does
//! not own when a stream is read or what a membership should be: `sync::activity` and
//! `sync::groups` decide, this module keeps. `forget` erases all three (`erasure.rs`).

use std::collections::{HashMap, HashSet};

use sqlx::Row;

use super::rows::Rows;
use super::{now_text, time_text, Result, Store};
use crate::model::{CustomerId, Projection, ProviderName, RemoteId};
use crate::providers::Event;

/// One stream of one customer to read: the provider, the customer's record there and
/// the cursor the last read left (`None`: from the start).
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub provider: ProviderName,
    pub remote_id: RemoteId,
    pub cursor: Option<String>,
}

/// A page of `provider`'s marks after (`$3`, `$4`) in due order, each with whether
/// its stream is live (its link there, not gone, merged; its customer not tombstoned).
const MOST_DUE: &str = "SELECT m.refreshed_at, m.customer_id,
       CASE WHEN l.gone = 0 AND l.snapshot IS NOT NULL AND c.tombstoned_at IS NULL
            THEN 1 ELSE 0 END
    FROM activity_marks m
    LEFT JOIN links l ON l.provider = m.provider AND l.customer_id = m.customer_id
    LEFT JOIN customers c ON c.id = m.customer_id
    WHERE m.tenant = $1 AND m.provider = $2 AND (m.refreshed_at, m.customer_id) > ($3, $4)
    ORDER BY m.refreshed_at, m.customer_id
    LIMIT $5";

/// One read of one customer's stream, for [`Store::store_reads`].
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRead {
    pub provider: ProviderName,
    pub customer: CustomerId,
    pub outcome: ReadOutcome,
}

/// What a read of a stream came back with.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadOutcome {
    /// A page: its events, and the cursor the next read starts from (`None`: the
    /// stream's start).
    Page {
        events: Vec<Event>,
        cursor: Option<String>,
    },
    /// The read failed: the stream is not read again before the others' turn.
    Failed,
}

/// One event of a person's timeline, as `custsync activity` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEvent {
    pub provider: String,
    pub id: String,
    pub kind: String,
    pub label: String,
    pub occurred_at: Option<String>,
    pub raw: serde_json::Value,
}

impl TimelineEvent {
    /// When it happened, as RFC 3339 UTC with only the fractions it has
    /// (`2019-01-30T13:30:00Z`).
    pub fn when(&self) -> Option<String> {
        let t = super::parse_time(self.occurred_at.as_deref()?)?;
        Some(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }
}

/// How far behind activity polling is, for `status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ActivityLag {
    /// Customers with at least one stream (a live Malomo or Sendwithus link).
    pub customers: u64,
    /// Customers with a stream never read.
    pub never_refreshed: u64,
    /// When the least recently read stream was read (RFC 3339), if any was.
    pub oldest_refresh: Option<String>,
}

/// A customer linked to a provider holding groups, with what custsync knows of its
/// memberships there.
#[derive(Debug, Clone)]
pub struct GroupSubject {
    pub id: CustomerId,
    /// The record in the provider (for Sendwithus: the email it was written under).
    pub remote_id: RemoteId,
    pub fields: Projection,
    pub tombstoned: bool,
    /// By group id: the record the membership was known for, and whether it is a member.
    pub known: HashMap<String, (RemoteId, bool)>,
}

/// A membership as now known, to be remembered.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub customer: CustomerId,
    pub group_id: String,
    pub remote_id: RemoteId,
    pub member: bool,
}

/// A batch of a provider's live links after a customer id, in the order of the live
/// links' index: the range and the order are on the link's column, so each batch reads
/// its own rows only (ordered by the customer's id, SQLite sorted every link after the
/// batch's start to keep 500 of them: a second a batch at 1,000,000 people).
pub(super) const GROUP_BATCH: &str =
    "SELECT c.id, l.remote_id, c.fields, CASE WHEN c.tombstoned_at IS NULL THEN 0 ELSE 1 END
 FROM links l JOIN customers c ON c.id = l.customer_id
 WHERE l.provider = $1 AND l.gone = 0 AND l.snapshot IS NOT NULL AND l.customer_id > $2
 ORDER BY l.customer_id LIMIT $3";

/// [`GROUP_BATCH`] for the customers marked in `groups_dirty` only (what changed since
/// the last pass), in the order of their ids. `CROSS JOIN` keeps SQLite reading the
/// marks first (by their key, in order) and each one's link and customer by theirs;
/// left to choose, it read every link of the provider after `$2` and sorted them.
pub(super) const GROUP_DIRTY_BATCH: &str =
    "SELECT c.id, l.remote_id, c.fields, CASE WHEN c.tombstoned_at IS NULL THEN 0 ELSE 1 END
 FROM groups_dirty d CROSS JOIN links l CROSS JOIN customers c
 WHERE d.customer_id > $2 AND l.provider = $1 AND l.customer_id = d.customer_id
   AND l.gone = 0 AND l.snapshot IS NOT NULL AND c.id = d.customer_id
 ORDER BY d.customer_id LIMIT $3";

/// What is known of the memberships of a range of customer ids, read from their index.
pub(super) const GROUP_MEMBERS: &str =
    "SELECT customer_id, group_id, remote_id, member FROM group_members
 WHERE tenant = $1 AND provider = $2 AND customer_id BETWEEN $3 AND $4";

/// Which customers a group pass plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupScope {
    /// Every customer linked to the provider.
    Every,
    /// Those marked in `groups_dirty`: changed since the last pass.
    Changed,
}

/// Marks every stream of provider `$2` in tenant `$1` that has no mark yet, when the
/// provider becomes a source of activity. A conflict, not an anti-join: PostgreSQL
/// planned `NOT EXISTS (SELECT … FROM activity_marks …)` over the marks just made for
/// another provider, with no statistics of them yet, as a nested loop over all of
/// them for every link: 2.2 s of the server's time at 10,000 people, growing with the
/// square of the people.
pub const MARK_EVERY_STREAM: &str =
    "INSERT INTO activity_marks (tenant, provider, customer_id, refreshed_at)
     SELECT $1, l.provider, l.customer_id, '' FROM links l WHERE l.provider = $2
     ON CONFLICT (tenant, provider, customer_id) DO NOTHING";

impl Store {
    /// Up to `limit` customers whose streams of `providers` are most due (never read
    /// first, then least recently read, then by id), or `only`, with each live
    /// stream and its cursor.
    ///
    /// Read from the marks' index, a few rows for each provider, whatever the number of
    /// customers: every stream of a provider has a mark once it is a source (the first
    /// poll with it marks them all, in one statement, and triggers mark each new one).
    /// A mark whose stream is no more (its link gone or moved, its customer
    /// tombstoned) is passed over and marked read now, so it is not read again before
    /// every other.
    pub async fn activity_due(
        &self,
        tenant: &str,
        providers: &[ProviderName],
        limit: usize,
        only: Option<CustomerId>,
    ) -> Result<Vec<(CustomerId, Vec<Stream>)>> {
        let names = super::links::json(&providers);
        if limit == 0 || providers.is_empty() {
            return Ok(Vec::new());
        }
        self.mark_every_stream(tenant, providers).await?;
        let picked: Vec<i64> = match only {
            Some(c) => vec![c.0],
            None => {
                let mut due: Vec<(String, i64)> = Vec::new();
                for p in providers {
                    due.extend(self.most_due(tenant, p, limit).await?);
                }
                due.sort_unstable();
                let mut seen = HashSet::new();
                due.into_iter()
                    .filter(|(_, cid)| seen.insert(*cid))
                    .map(|(_, cid)| cid)
                    .take(limit)
                    .collect()
            }
        };
        if picked.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT l.customer_id, l.provider, l.remote_id, m.cursor
             FROM links l JOIN customers c ON c.id = l.customer_id
             LEFT JOIN activity_marks m
               ON m.tenant = $1 AND m.provider = l.provider AND m.customer_id = l.customer_id
             WHERE l.gone = 0 AND l.snapshot IS NOT NULL AND c.tombstoned_at IS NULL
               AND l.provider {} AND l.customer_id {}
             ORDER BY l.customer_id, l.provider",
            self.in_texts(2),
            self.in_ints(3)
        );
        let mut streams: HashMap<i64, Vec<Stream>> = HashMap::new();
        for r in sqlx::query(&sql)
            .bind(tenant)
            .bind(&names)
            .bind(super::links::json(&picked))
            .fetch_all(&self.pool)
            .await?
        {
            streams.entry(r.get(0)).or_default().push(Stream {
                provider: ProviderName(r.get(1)),
                remote_id: RemoteId(r.get(2)),
                cursor: r.get(3),
            });
        }
        Ok(picked
            .into_iter()
            .filter_map(|cid| Some((CustomerId(cid), streams.remove(&cid)?)))
            .collect())
    }

    /// Keeps only `kept` as sources of activity (none when activity is off): the
    /// triggers stop marking the streams of the others, and a provider made a source
    /// again has every stream marked again at its first poll. Their marks stay, with
    /// where they were read to.
    pub async fn activity_sources_kept(&self, tenant: &str, kept: &[ProviderName]) -> Result<()> {
        let kept: Vec<&str> = kept.iter().map(|p| p.0.as_str()).collect();
        self.providers_kept("activity_sources", tenant, &kept).await
    }

    /// Deletes the rows of `table` (one per tenant and provider) of every provider
    /// not in `kept`.
    async fn providers_kept(&self, table: &str, tenant: &str, kept: &[&str]) -> Result<()> {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE tenant = $1 AND NOT (provider {})",
            self.in_texts(2)
        ))
        .bind(tenant)
        .bind(super::links::json(&kept))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Makes a mark for every stream of the `providers` that are not sources yet, and
    /// makes them sources (from then on the triggers mark each new stream). One
    /// transaction: a link made meanwhile is marked by one or the other.
    async fn mark_every_stream(&self, tenant: &str, providers: &[ProviderName]) -> Result<()> {
        let known: Vec<String> =
            sqlx::query_scalar("SELECT provider FROM activity_sources WHERE tenant = $1")
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?;
        let new: Vec<&ProviderName> = providers.iter().filter(|p| !known.contains(&p.0)).collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let mut marked = 0;
        for p in new {
            // Another process (`activity --refresh` beside the daemon) may have made it
            // a source meanwhile, and marked its streams.
            let made = sqlx::query(
                "INSERT INTO activity_sources (tenant, provider) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(tenant)
            .bind(&p.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if made == 0 {
                continue;
            }
            marked += sqlx::query(MARK_EVERY_STREAM)
                .bind(tenant)
                .bind(&p.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        // The statistics of the marks were taken before there were any (a first run
        // refreshes them after its merge): the reads of the marks that follow are
        // planned on the ones there are now.
        if marked >= 1000 {
            self.analyze("activity_marks").await?;
        }
        Ok(())
    }

    /// Up to `limit` customers of `provider`'s live streams, most due first: (when
    /// read, `""` never; id). Read from the marks' index in order; the marks of
    /// streams that are no more, met on the way, are marked read now.
    async fn most_due(
        &self,
        tenant: &str,
        provider: &ProviderName,
        limit: usize,
    ) -> Result<Vec<(String, i64)>> {
        let page = limit + 64;
        let mut due = Vec::new();
        let mut dead = Vec::new();
        let mut after = (String::new(), i64::MIN);
        loop {
            let rows = sqlx::query(MOST_DUE)
                .bind(tenant)
                .bind(&provider.0)
                .bind(&after.0)
                .bind(after.1)
                .bind(page as i64)
                .fetch_all(&self.pool)
                .await?;
            let full = rows.len() == page;
            for r in &rows {
                let (read, cid): (String, i64) = (r.get(0), r.get(1));
                if r.get::<i64, _>(2) == 1 {
                    due.push((read.clone(), cid));
                } else {
                    dead.push(cid);
                }
                after = (read, cid);
                if due.len() == limit {
                    break;
                }
            }
            if due.len() == limit || !full {
                break;
            }
        }
        if !dead.is_empty() {
            sqlx::query(&format!(
                "UPDATE activity_marks SET refreshed_at = $3
                 WHERE tenant = $1 AND provider = $2 AND customer_id {}",
                self.in_ints(4)
            ))
            .bind(tenant)
            .bind(&provider.0)
            .bind(now_text())
            .bind(super::links::json(&dead))
            .execute(&self.pool)
            .await?;
        }
        Ok(due)
    }

    /// Stores reads of streams in one transaction, in order: each read's events (an
    /// event already kept is left as it is) and its stream's mark, with the cursor
    /// where the next read starts; a failed read marks its stream as read now and
    /// leaves the cursor. Set-based: a statement for the events, one for the marks of
    /// the streams with a page, one for those whose reads all failed, whatever the
    /// number of reads. Answers how many events were new.
    pub async fn store_reads(&self, tenant: &str, reads: &[StreamRead]) -> Result<u64> {
        if reads.is_empty() {
            return Ok(0);
        }
        let now = now_text();
        // Each stream's mark as its reads leave it, in order: the last page's cursor
        // (a failure after it keeps it), the newest event of them all.
        struct Mark<'r> {
            cursor: Option<Option<&'r str>>,
            newest: Option<String>,
        }
        let mut marks: Vec<((&ProviderName, CustomerId), Mark)> = Vec::new();
        let mut at: HashMap<(&ProviderName, CustomerId), usize> = HashMap::new();
        for r in reads {
            let key = (&r.provider, r.customer);
            let i = *at.entry(key).or_insert_with(|| {
                let unread = Mark {
                    cursor: None,
                    newest: None,
                };
                marks.push((key, unread));
                marks.len() - 1
            });
            if let ReadOutcome::Page { events, cursor } = &r.outcome {
                let mark = &mut marks[i].1;
                mark.cursor = Some(cursor.as_deref());
                let newest = events.iter().filter_map(|e| e.at).max().map(time_text);
                mark.newest = mark.newest.take().max(newest);
            }
        }
        let mut listed: Vec<(&StreamRead, &Event)> = Vec::new();
        for r in reads {
            if let ReadOutcome::Page { events, .. } = &r.outcome {
                listed.extend(events.iter().map(|e| (r, e)));
            }
        }
        let texts: Vec<(Option<String>, String)> = listed
            .iter()
            .map(|(_, e)| (e.at.map(time_text), e.raw.to_string()))
            .collect();
        let mut events = Rows::with_capacity(7, texts.len());
        for ((r, e), (occurred, raw)) in listed.iter().zip(&texts) {
            events.push([
                r.provider.0.as_str().into(),
                r.customer.0.into(),
                e.id.as_str().into(),
                e.kind.as_str().into(),
                e.label.as_str().into(),
                occurred.as_deref().into(),
                raw.into(),
            ]);
        }
        let mut paged = Rows::with_capacity(4, marks.len());
        let mut failed = Rows::with_capacity(2, marks.len());
        for ((provider, customer), mark) in &marks {
            match mark.cursor {
                Some(cursor) => paged.push([
                    provider.0.as_str().into(),
                    customer.0.into(),
                    cursor.into(),
                    mark.newest.as_deref().into(),
                ]),
                None => failed.push([provider.0.as_str().into(), customer.0.into()]),
            }
        }
        let fixed = [tenant.into(), now.as_str().into()];
        let mut tx = self.pool.begin().await?;
        let new = events
            .execute(
                &mut tx,
                &fixed,
                "INSERT INTO activity (tenant, provider, customer_id, remote_id, type, label, occurred_at, raw, fetched_at)
                 SELECT $1, column1, column2, column3, column4, column5, column6, column7, $2 FROM {rows} WHERE true
                 ON CONFLICT (tenant, provider, remote_id) DO NOTHING",
                "INSERT INTO activity (tenant, provider, customer_id, remote_id, type, label, occurred_at, raw, fetched_at)
                 SELECT $1, e->>0, (e->>1)::BIGINT, e->>2, e->>3, e->>4, e->>5, e->>6, $2
                 FROM jsonb_array_elements($3::jsonb) AS e
                 ON CONFLICT (tenant, provider, remote_id) DO NOTHING",
            )
            .await?;
        paged
            .execute(
                &mut tx,
                &fixed,
                "INSERT INTO activity_marks (tenant, provider, customer_id, cursor, newest_at, refreshed_at)
                 SELECT $1, column1, column2, column3, column4, $2 FROM {rows} WHERE true
                 ON CONFLICT (tenant, provider, customer_id) DO UPDATE SET
                   cursor = excluded.cursor,
                   newest_at = CASE WHEN excluded.newest_at > COALESCE(activity_marks.newest_at, '')
                                    THEN excluded.newest_at ELSE activity_marks.newest_at END,
                   refreshed_at = excluded.refreshed_at",
                "INSERT INTO activity_marks (tenant, provider, customer_id, cursor, newest_at, refreshed_at)
                 SELECT $1, e->>0, (e->>1)::BIGINT, e->>2, e->>3, $2
                 FROM jsonb_array_elements($3::jsonb) AS e
                 ON CONFLICT (tenant, provider, customer_id) DO UPDATE SET
                   cursor = EXCLUDED.cursor,
                   newest_at = CASE WHEN EXCLUDED.newest_at > COALESCE(activity_marks.newest_at, '')
                                    THEN EXCLUDED.newest_at ELSE activity_marks.newest_at END,
                   refreshed_at = EXCLUDED.refreshed_at",
            )
            .await?;
        failed
            .execute(
                &mut tx,
                &fixed,
                "INSERT INTO activity_marks (tenant, provider, customer_id, refreshed_at)
                 SELECT $1, column1, column2, $2 FROM {rows} WHERE true
                 ON CONFLICT (tenant, provider, customer_id) DO UPDATE SET refreshed_at = excluded.refreshed_at",
                "INSERT INTO activity_marks (tenant, provider, customer_id, refreshed_at)
                 SELECT $1, e->>0, (e->>1)::BIGINT, $2
                 FROM jsonb_array_elements($3::jsonb) AS e
                 ON CONFLICT (tenant, provider, customer_id) DO UPDATE SET refreshed_at = EXCLUDED.refreshed_at",
            )
            .await?;
        tx.commit().await?;
        Ok(new)
    }

    /// One person's events from every source, newest first (events without a time last).
    pub async fn timeline(&self, tenant: &str, customer: CustomerId) -> Result<Vec<TimelineEvent>> {
        let rows = sqlx::query(
            "SELECT provider, remote_id, type, label, occurred_at, raw FROM activity
             WHERE tenant = $1 AND customer_id = $2
             ORDER BY occurred_at IS NULL, occurred_at DESC, id DESC",
        )
        .bind(tenant)
        .bind(customer.0)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(TimelineEvent {
                    provider: r.get(0),
                    id: r.get(1),
                    kind: r.get(2),
                    label: r.get(3),
                    occurred_at: r.get(4),
                    raw: serde_json::from_str(&r.get::<String, _>(5))?,
                })
            })
            .collect()
    }

    /// How far behind activity polling is over the streams of `providers`, for
    /// `status`: every customer with a live stream counted, a range of ids per
    /// statement (a stream with no mark yet, or its mark's `''`, was never read). The
    /// tombstoned customers are read once a statement from their own index, not
    /// tested on each customer's row.
    pub async fn activity_lag(
        &self,
        tenant: &str,
        providers: &[ProviderName],
    ) -> Result<ActivityLag> {
        const IDS: i64 = 20_000;
        let names = super::links::json(&providers);
        let mut lag = ActivityLag {
            customers: 0,
            never_refreshed: 0,
            oldest_refresh: None,
        };
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM customers")
            .fetch_one(&self.pool)
            .await?;
        let sql = self.activity_lag_sql();
        let (mut after, last) = (0, last.unwrap_or(0));
        while after < last {
            let upto = (after + IDS).min(last);
            let rows: Vec<(i64, String, Option<String>)> = super::decode_rows(
                sqlx::query_scalar(&sql)
                    .bind(tenant)
                    .bind(&names)
                    .bind(after)
                    .bind(upto)
                    .fetch_one(&self.pool)
                    .await?,
            )?;
            for (_, refreshed, oldest) in rows {
                lag.customers += 1;
                lag.never_refreshed += u64::from(refreshed.is_empty());
                if let Some(o) = oldest {
                    if lag.oldest_refresh.as_ref().is_none_or(|held| o < *held) {
                        lag.oldest_refresh = Some(o);
                    }
                }
            }
            after = upto;
        }
        Ok(lag)
    }

    /// One range of [`Store::activity_lag`]: `$1` the tenant, `$2` the providers,
    /// `$3` and `$4` the range of customer ids.
    fn activity_lag_sql(&self) -> String {
        format!(
            "SELECT {} FROM (
               SELECT l.customer_id AS cid, MIN(COALESCE(m.refreshed_at, '')) AS r,
                      MIN(NULLIF(m.refreshed_at, '')) AS o
               FROM links l
               LEFT JOIN activity_marks m
                 ON m.tenant = $1 AND m.provider = l.provider AND m.customer_id = l.customer_id
               WHERE l.gone = 0 AND l.snapshot IS NOT NULL
                 AND l.customer_id NOT IN (SELECT id FROM customers WHERE tombstoned_at IS NOT NULL)
                 AND l.provider {} AND l.customer_id > $3 AND l.customer_id <= $4
               GROUP BY l.customer_id) AS d",
            self.json_rows("cid, r, o"),
            self.in_texts(2)
        )
    }

    /// How far behind activity polling is after a poll over `providers` (so every
    /// stream has its mark): the customers with a stream never read, and the oldest
    /// read of a live stream. Reads the marks' index alone for the first (a mark whose
    /// stream is no more counts until a poll passes over it), and for the second, for
    /// each provider, the first read mark that is live.
    pub async fn activity_behind(
        &self,
        tenant: &str,
        providers: &[ProviderName],
    ) -> Result<ActivityLag> {
        let never: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(DISTINCT customer_id) FROM activity_marks
             WHERE tenant = $1 AND provider {} AND refreshed_at = ''",
            self.in_texts(2)
        ))
        .bind(tenant)
        .bind(super::links::json(&providers))
        .fetch_one(&self.pool)
        .await?;
        let mut oldest: Option<String> = None;
        for p in providers {
            let first: Option<String> = sqlx::query_scalar(
                "SELECT m.refreshed_at FROM activity_marks m
                 JOIN links l ON l.provider = m.provider AND l.customer_id = m.customer_id
                 JOIN customers c ON c.id = m.customer_id
                 WHERE m.tenant = $1 AND m.provider = $2 AND m.refreshed_at > ''
                   AND l.gone = 0 AND l.snapshot IS NOT NULL AND c.tombstoned_at IS NULL
                 ORDER BY m.refreshed_at LIMIT 1",
            )
            .bind(tenant)
            .bind(&p.0)
            .fetch_optional(&self.pool)
            .await?;
            oldest = match (oldest, first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(ActivityLag {
            customers: 0,
            never_refreshed: never as u64,
            oldest_refresh: oldest,
        })
    }

    /// Up to `limit` customers with id above `after` linked to `provider`, with what
    /// is known of their memberships of `groups` there.
    pub async fn group_batch(
        &self,
        tenant: &str,
        provider: &ProviderName,
        scope: GroupScope,
        after: i64,
        limit: i64,
    ) -> Result<Vec<GroupSubject>> {
        let batch = match scope {
            GroupScope::Every => GROUP_BATCH,
            GroupScope::Changed => GROUP_DIRTY_BATCH,
        };
        let rows = sqlx::query(batch)
            .bind(&provider.0)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(Vec::new());
        };
        let (first, last): (i64, i64) = (first.get(0), last.get(0));
        // A batch of every customer is a range of ids; one of the changed may be a few
        // ids spread over all of them, so their memberships are read by id.
        let by_ids: String;
        let members = match scope {
            GroupScope::Every => sqlx::query(GROUP_MEMBERS)
                .bind(tenant)
                .bind(&provider.0)
                .bind(first)
                .bind(last),
            GroupScope::Changed => {
                by_ids = format!(
                    "SELECT customer_id, group_id, remote_id, member FROM group_members
                     WHERE tenant = $1 AND provider = $2 AND customer_id {}",
                    self.in_ints(3)
                );
                let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
                sqlx::query(&by_ids)
                    .bind(tenant)
                    .bind(&provider.0)
                    .bind(super::links::json(&ids))
            }
        };
        let mut known: HashMap<i64, HashMap<String, (RemoteId, bool)>> = HashMap::new();
        for r in members.fetch_all(&self.pool).await? {
            known
                .entry(r.get(0))
                .or_default()
                .insert(r.get(1), (RemoteId(r.get(2)), r.get::<i64, _>(3) != 0));
        }
        rows.into_iter()
            .map(|r| {
                let id: i64 = r.get(0);
                Ok(GroupSubject {
                    id: CustomerId(id),
                    remote_id: RemoteId(r.get(1)),
                    fields: serde_json::from_str(&r.get::<String, _>(2))?,
                    tombstoned: r.get::<i64, _>(3) != 0,
                    known: known.remove(&id).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Which customers the group pass of `provider` plans: every one when no pass
    /// planned them all under these `rules` (a digest) within `every`, else those
    /// changed since the last pass.
    pub async fn group_scope(
        &self,
        tenant: &str,
        provider: &ProviderName,
        rules: &str,
        every: chrono::Duration,
    ) -> Result<GroupScope> {
        let last: Option<(String, String)> = sqlx::query_as(
            "SELECT rules, full_at FROM groups_passes WHERE tenant = $1 AND provider = $2",
        )
        .bind(tenant)
        .bind(&provider.0)
        .fetch_optional(&self.pool)
        .await?;
        let now = chrono::Utc::now();
        Ok(match last {
            Some((known, at))
                if known == rules && super::parse_time(&at).is_some_and(|t| now - t < every) =>
            {
                GroupScope::Changed
            }
            _ => GroupScope::Every,
        })
    }

    /// Remembers that a pass planned every customer of `provider` under `rules`, now.
    pub async fn group_planned_every(
        &self,
        tenant: &str,
        provider: &ProviderName,
        rules: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO groups_passes (tenant, provider, rules, full_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant, provider) DO UPDATE SET rules = excluded.rules, full_at = excluded.full_at",
        )
        .bind(tenant)
        .bind(&provider.0)
        .bind(rules)
        .bind(now_text())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// After a pass that planned every group provider to its end: nothing changed is
    /// left to plan but the customers in `failed`, planned again by the next pass.
    pub async fn groups_planned(&self, failed: &[CustomerId]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM groups_dirty")
            .execute(&mut *tx)
            .await?;
        if !failed.is_empty() {
            // One statement for all of them (every call fails when the provider does);
            // a customer failed in two providers is marked once.
            let ids: Vec<i64> = failed.iter().map(|c| c.0).collect();
            sqlx::query(&format!(
                "INSERT INTO groups_dirty (customer_id) SELECT id FROM customers WHERE id {}",
                self.in_ints(1)
            ))
            .bind(super::links::json(&ids))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the passes of the providers not in `kept` (those without rules now), so
    /// that rules given back plan every customer again; with none kept (no rules at
    /// all, so no pass to clear them), the marks of what changed too.
    pub async fn group_rules_kept(&self, tenant: &str, kept: &[&ProviderName]) -> Result<()> {
        let kept: Vec<&str> = kept.iter().map(|p| p.0.as_str()).collect();
        self.providers_kept("groups_passes", tenant, &kept).await?;
        match kept.is_empty() {
            true => self.groups_planned(&[]).await,
            false => Ok(()),
        }
    }

    /// Remembers memberships as now known, in one transaction.
    pub async fn save_memberships(
        &self,
        tenant: &str,
        provider: &ProviderName,
        rows: &[Membership],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let now = now_text();
        // One statement for the batch. A membership learned twice (a group both asked
        // about and written) keeps the last, as a statement per row did; PostgreSQL
        // refuses an upsert that meets the same row twice.
        let mut seen = HashSet::new();
        let mut last: Vec<&Membership> = rows
            .iter()
            .rev()
            .filter(|m| seen.insert((m.customer, m.group_id.as_str())))
            .collect();
        last.reverse();
        let mut values = Rows::with_capacity(4, last.len());
        for m in &last {
            values.push([
                m.group_id.as_str().into(),
                m.customer.0.into(),
                m.remote_id.0.as_str().into(),
                i64::from(m.member).into(),
            ]);
        }
        let mut tx = self.pool.begin().await?;
        values
            .execute(
                &mut tx,
                &[tenant.into(), provider.0.as_str().into(), now.as_str().into()],
                "INSERT INTO group_members (tenant, provider, group_id, customer_id, remote_id, member, updated_at)
                 SELECT $1, $2, column1, column2, column3, column4, $3 FROM {rows} WHERE true
                 ON CONFLICT (tenant, provider, group_id, customer_id) DO UPDATE SET
                   remote_id = excluded.remote_id, member = excluded.member, updated_at = excluded.updated_at",
                "INSERT INTO group_members (tenant, provider, group_id, customer_id, remote_id, member, updated_at)
                 SELECT $1, $2, e->>0, (e->>1)::BIGINT, e->>2, (e->>3)::BIGINT, $3
                 FROM jsonb_array_elements($4::jsonb) AS e
                 ON CONFLICT (tenant, provider, group_id, customer_id) DO UPDATE SET
                   remote_id = EXCLUDED.remote_id, member = EXCLUDED.member, updated_at = EXCLUDED.updated_at",
            )
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorePath;
    use crate::model::Email;
    use crate::store::exec;
    use serde_json::json;

    fn name(n: &str) -> ProviderName {
        ProviderName(n.into())
    }

    fn event(id: &str, at: Option<i64>) -> Event {
        Event {
            id: id.into(),
            at: at.and_then(|s| chrono::DateTime::from_timestamp(s, 0)),
            kind: "t".into(),
            label: format!("label {id}"),
            raw: json!({"id": id}),
        }
    }

    /// Stores one page of `provider`'s stream of `customer`; answers the new events.
    async fn page_read(
        s: &Store,
        provider: &str,
        customer: CustomerId,
        events: &[Event],
        cursor: Option<&str>,
    ) -> u64 {
        let read = StreamRead {
            provider: name(provider),
            customer,
            outcome: ReadOutcome::Page {
                events: events.to_vec(),
                cursor: cursor.map(str::to_string),
            },
        };
        s.store_reads("default", &[read]).await.unwrap()
    }

    /// The marks of `customer`: (provider, cursor, newest_at, read).
    async fn marks(
        s: &Store,
        customer: i64,
    ) -> Vec<(String, Option<String>, Option<String>, bool)> {
        sqlx::query(
            "SELECT provider, cursor, newest_at, refreshed_at FROM activity_marks
             WHERE tenant = 'default' AND customer_id = $1 ORDER BY provider",
        )
        .bind(customer)
        .fetch_all(s.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get::<Option<String>, _>(3).is_some(),
            )
        })
        .collect()
    }

    /// Many reads in one batch are stored as if one by one, in order: the last page's
    /// cursor stands (a failure after it keeps it), the newest event of them all, an
    /// event listed twice kept once, a stream whose only read failed marked read with
    /// no cursor.
    #[tokio::test]
    async fn a_batch_of_reads_is_stored_as_its_reads_one_by_one_in_order() {
        let s = store().await;
        let (c1, c2) = (CustomerId(1), CustomerId(2));
        let page = |events: Vec<Event>, cursor: Option<&str>| ReadOutcome::Page {
            events,
            cursor: cursor.map(str::to_string),
        };
        let read = |provider: &str, customer, outcome| StreamRead {
            provider: name(provider),
            customer,
            outcome,
        };
        let reads = [
            read(
                "ship",
                c1,
                page(
                    vec![event("e1", Some(300)), event("e2", Some(100))],
                    Some("p2"),
                ),
            ),
            read("email", c2, ReadOutcome::Failed),
            read(
                "ship",
                c1,
                page(
                    vec![event("e2", Some(100)), event("e3", Some(200))],
                    Some("p3"),
                ),
            ),
            read("ship", c2, page(vec![event("f1", None)], None)),
            read("ship", c1, ReadOutcome::Failed),
        ];
        assert_eq!(
            s.store_reads("default", &reads).await.unwrap(),
            4,
            "e2 once"
        );
        let t3 = || Some("1970-01-01T00:05:00.000000Z".to_string());
        assert_eq!(
            marks(&s, 1).await,
            [("ship".into(), Some("p3".into()), t3(), true)]
        );
        assert_eq!(
            marks(&s, 2).await,
            [
                ("email".into(), None, None, true),
                ("ship".into(), None, None, true)
            ]
        );
        // A later batch moves the cursor on and keeps the newest seen.
        let later = [read(
            "ship",
            c1,
            page(vec![event("e4", Some(50))], Some("p4")),
        )];
        assert_eq!(s.store_reads("default", &later).await.unwrap(), 1);
        assert_eq!(
            marks(&s, 1).await,
            [("ship".into(), Some("p4".into()), t3(), true)]
        );
        assert_eq!(s.store_reads("default", &[]).await.unwrap(), 0);
        assert_eq!(s.timeline("default", c1).await.unwrap().len(), 4);
    }

    /// The customers whose `ship` stream has a mark, and when each was read.
    async fn ship_marks(s: &Store) -> Vec<(i64, String)> {
        sqlx::query_as("SELECT customer_id, refreshed_at FROM activity_marks WHERE provider = 'ship' ORDER BY customer_id")
            .fetch_all(s.pool())
            .await
            .unwrap()
    }

    /// The first poll with a source marks every stream it has; from then on a link
    /// made or moved to another customer is marked by the triggers, never-read first.
    #[tokio::test]
    async fn every_stream_of_a_source_has_a_mark_from_its_first_poll_on() {
        let s = store().await;
        exec(&s, "INSERT INTO customers (id, email, fields, updated_at, created_at) VALUES (5, 'e@example.com', '{}', 'x', 'x'), (6, 'f@example.com', '{}', 'x', 'x')").await;
        // Not a source yet: a new link is not marked.
        exec(&s, "INSERT INTO links (provider, remote_id, customer_id, snapshot) VALUES ('ship', 'ship-5', 5, '{}')").await;
        assert!(ship_marks(&s).await.is_empty());
        let ship = [name("ship")];
        let due = s.activity_due("default", &ship, 10, None).await.unwrap();
        let ids: Vec<i64> = due.iter().map(|(c, _)| c.0).collect();
        assert_eq!(ids, [1, 2, 5], "never read, by id; 3 is tombstoned");
        // 3's stream is no more (its customer tombstoned): passed over, marked read.
        let never = |ids: &[i64]| ids.iter().map(|i| (*i, String::new())).collect::<Vec<_>>();
        let marks = ship_marks(&s).await;
        assert!(!marks[2].1.is_empty(), "{marks:?}");
        exec(
            &s,
            "UPDATE activity_marks SET refreshed_at = '' WHERE customer_id = 3",
        )
        .await;
        assert_eq!(ship_marks(&s).await, never(&[1, 2, 3, 5]));
        // A source now: a link made is marked, and one moved is marked for its new
        // customer; a link of another provider is not.
        exec(&s, "INSERT INTO links (provider, remote_id, customer_id, snapshot) VALUES ('ship', 'ship-6', 6, '{}'), ('store', 'store-6', 6, '{}')").await;
        exec(
            &s,
            "UPDATE links SET customer_id = 4 WHERE provider = 'ship' AND customer_id = 6",
        )
        .await;
        assert_eq!(ship_marks(&s).await, never(&[1, 2, 3, 4, 5, 6]));
        let marks: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM activity_marks WHERE provider = 'store'")
                .fetch_one(s.pool())
                .await
                .unwrap();
        assert_eq!(marks, 0);
        // No longer a source: nothing is marked; a source again: every stream is.
        s.activity_sources_kept("default", &[]).await.unwrap();
        exec(&s, "DELETE FROM activity_marks WHERE customer_id IN (4, 6)").await;
        exec(
            &s,
            "UPDATE links SET customer_id = 6 WHERE provider = 'ship' AND customer_id = 4",
        )
        .await;
        assert_eq!(ship_marks(&s).await, never(&[1, 2, 3, 5]));
        s.activity_due("default", &ship, 1, None).await.unwrap();
        assert_eq!(ship_marks(&s).await, never(&[1, 2, 3, 5, 6]));
    }

    /// A mark whose stream is no more is passed over and marked read, so the next
    /// poll does not walk it again; the lag after a poll, read from the marks, says
    /// what the count over every customer says.
    #[tokio::test]
    async fn a_mark_of_a_stream_no_more_is_passed_over_once() {
        let s = store().await;
        let ship = [name("ship"), name("email")];
        assert_eq!(
            s.activity_due("default", &ship, 1, None).await.unwrap()[0].0,
            CustomerId(1)
        );
        exec(&s, "UPDATE links SET gone = 1 WHERE customer_id = 1").await;
        let due = s.activity_due("default", &ship, 10, None).await.unwrap();
        let ids: Vec<i64> = due.iter().map(|(c, _)| c.0).collect();
        assert_eq!(ids, [2]);
        let marks = ship_marks(&s).await;
        assert!(!marks[0].1.is_empty(), "1, gone, is marked read: {marks:?}");
        assert_eq!(marks[1], (2, String::new()), "2 is due, not read yet");
        assert!(!marks[2].1.is_empty(), "3, tombstoned, too: {marks:?}");
        let behind = s.activity_behind("default", &ship).await.unwrap();
        let lag = s.activity_lag("default", &ship).await.unwrap();
        assert_eq!((behind.never_refreshed, behind.oldest_refresh), (1, None));
        assert_eq!(
            (lag.customers, lag.never_refreshed, lag.oldest_refresh),
            (1, 1, None)
        );
        page_read(&s, "ship", CustomerId(2), &[], None).await;
        let behind = s.activity_behind("default", &ship).await.unwrap();
        let lag = s.activity_lag("default", &ship).await.unwrap();
        assert_eq!(
            behind.never_refreshed, 1,
            "its email stream is still unread"
        );
        assert_eq!(behind.never_refreshed, lag.never_refreshed);
        assert!(behind.oldest_refresh.is_some());
        assert_eq!(behind.oldest_refresh, lag.oldest_refresh);
    }

    #[tokio::test]
    async fn the_most_due_are_read_from_the_marks_index_in_order() {
        let s = store().await;
        crate::store::reads_in_order(&s, MOST_DUE, 5, "activity_marks_due").await;
    }

    /// `status`'s lag reads the tombstoned from their index, never a customer's row
    /// (at 1,000,000 people that row read was most of 33 s).
    #[tokio::test]
    async fn the_lag_reads_no_customer_row() {
        let s = store().await;
        let explain = format!("EXPLAIN QUERY PLAN {}", s.activity_lag_sql());
        let plan: Vec<String> = sqlx::query(&explain)
            .bind("default")
            .bind("[\"ship\"]")
            .bind(0i64)
            .bind(10i64)
            .fetch_all(s.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(3))
            .collect();
        assert!(
            plan.iter()
                .any(|step| step.contains("customers_tombstoned")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.contains("INTEGER PRIMARY KEY")),
            "{plan:?}"
        );
    }

    /// Customers 1..=3 (`c3` tombstoned), linked to `ship` and `email`; `c4` only to `store`.
    async fn store() -> Store {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        for (id, email, tomb) in [
            (1, "a@example.com", false),
            (2, "b@example.com", false),
            (3, "c@example.com", true),
            (4, "d@example.com", false),
        ] {
            sqlx::query("INSERT INTO customers (id, email, fields, updated_at, created_at, tombstoned_at) VALUES ($1, $2, '{}', 'x', 'x', $3)")
                .bind(id)
                .bind(email)
                .bind(tomb.then_some("x"))
                .execute(s.pool())
                .await
                .unwrap();
            let providers: &[&str] = if id == 4 {
                &["store"]
            } else {
                &["ship", "email"]
            };
            for p in providers {
                sqlx::query("INSERT INTO links (provider, remote_id, customer_id, snapshot) VALUES ($1, $2, $3, '{}')")
                    .bind(p)
                    .bind(format!("{p}-{id}"))
                    .bind(id)
                    .execute(s.pool())
                    .await
                    .unwrap();
            }
        }
        s
    }

    /// Customers far apart in id, read a range at a time: the most due come first
    /// whatever range they are in, and the lag counts every range.
    #[tokio::test]
    async fn the_most_due_are_found_across_ranges_of_ids() {
        let s = Store::open(&StorePath::Memory, None).await.unwrap();
        // Read at: 1 and 45,000 recently, 70,000 long ago; 30,000 and 90,000 never.
        let read = [
            (1, Some("2026-12-02T10:00:00Z")),
            (30_000, None),
            (45_000, Some("2026-12-02T09:00:00Z")),
            (70_000, Some("2026-01-01T00:00:00Z")),
            (90_000, None),
        ];
        for (id, at) in read {
            sqlx::query("INSERT INTO customers (id, email, fields, updated_at, created_at) VALUES ($1, $2, '{}', 'x', 'x')")
                .bind(id)
                .bind(format!("p{id}@example.com"))
                .execute(s.pool())
                .await
                .unwrap();
            sqlx::query("INSERT INTO links (provider, remote_id, customer_id, snapshot) VALUES ('ship', $1, $2, '{}')")
                .bind(format!("ship-{id}"))
                .bind(id)
                .execute(s.pool())
                .await
                .unwrap();
            if let Some(at) = at {
                sqlx::query("INSERT INTO activity_marks (tenant, provider, customer_id, refreshed_at) VALUES ('default', 'ship', $1, $2)")
                    .bind(id)
                    .bind(at)
                    .execute(s.pool())
                    .await
                    .unwrap();
            }
        }
        let sources = [name("ship")];
        let due = |n| {
            let s = &s;
            let sources = &sources;
            async move {
                let due = s.activity_due("default", sources, n, None).await.unwrap();
                due.iter().map(|(c, _)| c.0).collect::<Vec<i64>>()
            }
        };
        assert_eq!(due(2).await, [30_000, 90_000], "never read first, by id");
        assert_eq!(due(3).await, [30_000, 90_000, 70_000]);
        assert_eq!(due(10).await, [30_000, 90_000, 70_000, 45_000, 1]);
        assert!(due(0).await.is_empty());
        let lag = s.activity_lag("default", &sources).await.unwrap();
        assert_eq!((lag.customers, lag.never_refreshed), (5, 2));
        assert_eq!(lag.oldest_refresh.as_deref(), Some("2026-01-01T00:00:00Z"));
    }

    #[tokio::test]
    async fn streams_are_due_least_recently_read_first_and_events_kept_once() {
        let s = store().await;
        let sources = [name("ship"), name("email")];
        let due = s.activity_due("default", &sources, 10, None).await.unwrap();
        let ids: Vec<i64> = due.iter().map(|(c, _)| c.0).collect();
        assert_eq!(ids, [1, 2], "live, linked to a source, not tombstoned");
        assert_eq!(due[0].1.len(), 2);
        assert!(due[0].1.iter().all(|st| st.cursor.is_none()));

        let c1 = CustomerId(1);
        let page = [event("e1", Some(100)), event("e2", Some(200))];
        let cursor = Some("/customers/ship-1/events?next=e2");
        assert_eq!(page_read(&s, "ship", c1, &page, cursor).await, 2);
        assert_eq!(page_read(&s, "ship", c1, &page, cursor).await, 0);
        let logs = [event("l1", Some(150)), event("l0", None)];
        page_read(&s, "email", c1, &logs, None).await;

        // Customer 2 was never read: first now.
        let due = s.activity_due("default", &sources, 1, None).await.unwrap();
        assert_eq!(due[0].0, CustomerId(2));
        let due = s
            .activity_due("default", &sources, 10, Some(c1))
            .await
            .unwrap();
        assert_eq!(due.len(), 1);
        let ship = due[0]
            .1
            .iter()
            .find(|st| st.provider == name("ship"))
            .unwrap();
        assert_eq!(ship.cursor.as_deref(), cursor);

        let lag = s.activity_lag("default", &sources).await.unwrap();
        assert_eq!((lag.customers, lag.never_refreshed), (2, 1));
        assert!(lag.oldest_refresh.is_some());

        let t = s.timeline("default", c1).await.unwrap();
        let order: Vec<&str> = t.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            order,
            ["e2", "l1", "e1", "l0"],
            "newest first, untimed last"
        );
        assert_eq!(t[0].when().as_deref(), Some("1970-01-01T00:03:20Z"));
        assert_eq!(t[0].provider, "ship");
        // Another tenant sees none of it.
        assert!(s.timeline("other", c1).await.unwrap().is_empty());

        s.save_memberships(
            "default",
            &name("email"),
            &[Membership {
                customer: c1,
                group_id: "g".into(),
                remote_id: RemoteId("email-1".into()),
                member: true,
            }],
        )
        .await
        .unwrap();
        let batch = s
            .group_batch("default", &name("email"), GroupScope::Every, 0, 10)
            .await
            .unwrap();
        assert_eq!(batch.len(), 3, "every live link, tombstoned included");
        assert_eq!(batch[0].known["g"], (RemoteId("email-1".into()), true));
        assert!(batch[2].tombstoned);
        // Only the changed (marked here by hand: no pass is recorded, so the triggers
        // mark nothing): all three, then the first alone, memberships read by id.
        sqlx::query("INSERT INTO groups_dirty (customer_id) SELECT customer_id FROM links WHERE provider = 'email'")
            .execute(s.pool())
            .await
            .unwrap();
        let email = name("email");
        let changed = |after| s.group_batch("default", &email, GroupScope::Changed, after, 10);
        assert_eq!(changed(0).await.unwrap().len(), 3);
        sqlx::query("DELETE FROM groups_dirty WHERE customer_id <> $1")
            .bind(c1.0)
            .execute(s.pool())
            .await
            .unwrap();
        let first = changed(0).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].id, c1);
        assert_eq!(first[0].known, batch[0].known);
        assert!(changed(c1.0).await.unwrap().is_empty());

        let run = s.begin_run("forget").await.unwrap();
        s.forget(run, &Email::parse("a@example.com").unwrap())
            .await
            .unwrap();
        assert!(s.timeline("default", c1).await.unwrap().is_empty());
        for table in ["activity", "activity_marks", "group_members"] {
            let n: i64 = sqlx::query(&format!(
                "SELECT COUNT(*) FROM {table} WHERE customer_id = 1"
            ))
            .fetch_one(s.pool())
            .await
            .unwrap()
            .get(0);
            assert_eq!(n, 0, "{table}");
        }
    }
}
