//! Many rows in one statement. On SQLite the rows are bound parameters of multi-row
//! `VALUES` lists, a few hundred rows per statement; on PostgreSQL they travel as one
//! JSON array of arrays, unpacked by the server as `jsonb`: a `json` element is text,
//! parsed again by each `->>` that reads a column of it (a row of nine columns cost
//! 7 µs of the server's time to unpack as `json`, 2.2 µs as `jsonb`, measured in `psql`
//! over 40,000 rows).
//!
//! SQLite once read them from JSON too (`json_each` and a `json_extract` per column):
//! each element was turned back into text and parsed again for its columns, and every
//! JSON text column (a payload, a snapshot) was escaped into the list and unescaped out
//! of it. About a quarter of a first run's merge went there.

use serde::Serialize;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

use super::{backend_of, Backend, Result};

/// The most parameters one SQLite statement binds (SQLite allows 32,766): a few
/// hundred rows.
const MOST_PARAMS: usize = 2000;

/// One bound value.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Param<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(Some(v))
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(v: Option<i64>) -> Self {
        Param::Int(v)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(Some(v))
    }
}

fn bind<'q>(q: Query<'q, Any, AnyArguments<'q>>, p: Param<'q>) -> Query<'q, Any, AnyArguments<'q>> {
    match p {
        Param::Int(v) => q.bind(v),
        Param::Text(v) => q.bind(v),
    }
}

/// Rows of `columns` values each, in order.
pub(crate) struct Rows<'a> {
    columns: usize,
    values: Vec<Param<'a>>,
}

impl<'a> Rows<'a> {
    pub(crate) fn with_capacity(columns: usize, rows: usize) -> Self {
        Rows {
            columns,
            values: Vec::with_capacity(columns * rows),
        }
    }

    /// Adds a row; it must have `columns` values.
    pub(crate) fn push<const N: usize>(&mut self, row: [Param<'a>; N]) {
        debug_assert_eq!(N, self.columns, "a row of the wrong width");
        self.values.extend(row);
    }

    /// Runs the statement over every row, after binding `fixed` as `$1`, `$2`, …;
    /// answers the rows it changed.
    ///
    /// `sqlite` holds `{rows}` where a table of the rows goes, its columns named
    /// `column1`, `column2`, … in order: `SELECT column1, $1 FROM {rows} WHERE true`.
    /// It runs once per chunk of rows (a power of two, a few hundred at most), in
    /// order. `postgres` reads the rows as a JSON array of arrays bound after `fixed`,
    /// and runs once.
    pub(crate) async fn execute(
        &self,
        conn: &mut AnyConnection,
        fixed: &[Param<'_>],
        sqlite: &str,
        postgres: &str,
    ) -> Result<u64> {
        if self.values.is_empty() {
            return Ok(0);
        }
        let mut changed = 0;
        match backend_of(conn) {
            Backend::Sqlite => {
                let mut rest = self.values.as_slice();
                while !rest.is_empty() {
                    let rows = chunk_rows(rest.len() / self.columns, self.columns);
                    let (chunk, after) = rest.split_at(rows * self.columns);
                    rest = after;
                    let (sql, slots) = sqlite_statement(sqlite, self.columns, rows);
                    let mut q = sqlx::query(&sql);
                    for slot in slots {
                        match slot {
                            Slot::Fixed(i) => q = bind(q, fixed[i]),
                            Slot::Rows => {
                                for p in chunk {
                                    q = bind(q, *p);
                                }
                            }
                        }
                    }
                    changed += q.execute(&mut *conn).await?.rows_affected();
                }
            }
            Backend::Postgres => {
                let rows: Vec<&[Param]> = self.values.chunks(self.columns).collect();
                let mut q = sqlx::query(postgres);
                for p in fixed {
                    q = bind(q, *p);
                }
                changed = q
                    .bind(serde_json::to_string(&rows)?)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
            }
        }
        Ok(changed)
    }
}

/// How many of `left` rows the next SQLite statement takes: a power of two, at most
/// [`MOST_PARAMS`] parameters. A statement is prepared once per size and kept by the
/// connection, so a page of any number of rows reuses a few statements (100 rows go
/// as 64, 32 and 4) instead of preparing one of its own.
fn chunk_rows(left: usize, columns: usize) -> usize {
    let most = (MOST_PARAMS / columns.max(1)).max(1);
    let most = 1 << most.ilog2();
    left.min(most).checked_ilog2().map_or(0, |b| 1 << b)
}

/// What a `?` of a SQLite statement made by [`sqlite_statement`] takes, in order.
#[derive(Debug, PartialEq)]
enum Slot {
    /// The fixed parameter of this index (`$1` is 0).
    Fixed(usize),
    /// Every value of the rows, in order.
    Rows,
}

/// The statement `template` for `rows` rows of `columns` values, with every
/// parameter an anonymous `?` bound in the order it appears: `$N` becomes `?` and
/// `{rows}` a `(VALUES (?, ?), (?, ?))` table. SQLite looks a numbered or named
/// parameter's name up in a list as long as the statement's parameters (a statement
/// of 2,000 parameters spent most of its time there); anonymous ones have no name.
fn sqlite_statement(template: &str, columns: usize, rows: usize) -> (String, Vec<Slot>) {
    let mut sql = String::with_capacity(template.len() + 10 + rows * (columns * 3 + 2));
    let mut slots = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.find(['$', '{']) {
        sql.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("{rows}") {
            sql.push_str("(VALUES ");
            for r in 0..rows {
                sql.push_str(if r == 0 { "(?" } else { ", (?" });
                for _ in 1..columns {
                    sql.push_str(", ?");
                }
                sql.push(')');
            }
            sql.push(')');
            slots.push(Slot::Rows);
            rest = after;
            continue;
        }
        let digits = rest[1..].bytes().take_while(u8::is_ascii_digit).count();
        match rest[1..1 + digits].parse::<usize>() {
            Ok(n) if rest.starts_with('$') && n > 0 => {
                sql.push('?');
                slots.push(Slot::Fixed(n - 1));
                rest = &rest[1 + digits..];
            }
            _ => {
                sql.push_str(&rest[..1]);
                rest = &rest[1..];
            }
        }
    }
    sql.push_str(rest);
    (sql, slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_becomes_anonymous_in_the_order_it_is_bound() {
        let (sql, slots) = sqlite_statement(
            "SELECT $2, column1, $1 FROM {rows} WHERE x = $2 AND y = '$[0]' AND z = '{}'",
            2,
            2,
        );
        assert_eq!(
            sql,
            "SELECT ?, column1, ? FROM (VALUES (?, ?), (?, ?)) WHERE x = ? AND y = '$[0]' AND z = '{}'"
        );
        assert_eq!(
            slots,
            [Slot::Fixed(1), Slot::Fixed(0), Slot::Rows, Slot::Fixed(1)]
        );
        assert_eq!(sqlite_statement("{rows}", 1, 1).0, "(VALUES (?))");
    }

    #[test]
    fn rows_go_in_chunks_of_powers_of_two_within_the_parameter_limit() {
        assert_eq!(chunk_rows(100, 5), 64);
        assert_eq!(chunk_rows(36, 5), 32);
        assert_eq!(chunk_rows(1, 9), 1);
        assert_eq!(chunk_rows(5000, 9), 128, "2000 / 9 = 222 rows at most");
        assert_eq!(chunk_rows(5000, 1), 1024);
        assert_eq!(chunk_rows(0, 3), 0);
    }

    #[tokio::test]
    async fn rows_beyond_one_statement_are_all_written_in_order_with_nulls_and_text_as_given() {
        use sqlx::{Connection, Executor, Row};
        super::super::install_drivers();
        let mut conn = AnyConnection::connect("sqlite::memory:").await.unwrap();
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, run INTEGER, n INTEGER, s TEXT)")
            .await
            .unwrap();
        let texts: Vec<String> = (0..2500).map(|i| format!("\"{i}\" é\\n")).collect();
        let mut rows = Rows::with_capacity(2, 0);
        for (i, t) in texts.iter().enumerate() {
            let s = (i % 7 != 0).then_some(t.as_str());
            rows.push([(i as i64).into(), s.into()]);
        }
        let written = rows
            .execute(
                &mut conn,
                &[7.into()],
                "INSERT INTO t (run, n, s) SELECT $1, column1, column2 FROM {rows} WHERE true",
                "",
            )
            .await
            .unwrap();
        assert_eq!(written, 2500);
        let back = sqlx::query("SELECT run, n, s FROM t ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(back.len(), 2500);
        for (i, r) in back.iter().enumerate() {
            assert_eq!(r.get::<i64, _>(0), 7);
            assert_eq!(r.get::<i64, _>(1), i as i64, "rows are inserted in order");
            let s: Option<String> = r.get(2);
            assert_eq!(s.as_deref(), (i % 7 != 0).then_some(texts[i].as_str()));
        }
    }
}
