//! An emulator's customer records in their stored order, with an index by id and one
//! by email, so that finding a customer costs the same with ten records or a million.
//!
//! Owns: the order (what a listing pages through) and the two indexes. Does not own
//! what an emulator matches on: each record type says what its id is and how its
//! email is compared (`email_key`), and lookups pass keys made the same way.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// A stored record: its id, and its email as the emulator compares emails.
pub(crate) trait Record {
    type Id: Eq + Hash + Clone;
    fn id(&self) -> Self::Id;
    /// The email as the emulator matches it (e.g. trimmed and lower-cased); `None`
    /// for a record without one.
    fn email_key(&self) -> Option<String>;
}

/// Records in insertion order. Ids need not be unique: the index keeps the first
/// record with an id, as a scan from the start would find it.
#[derive(Debug, Clone)]
pub(crate) struct Table<T: Record> {
    rows: Vec<T>,
    ids: HashMap<T::Id, usize>,
    /// Positions of the records with each email key, ascending.
    emails: HashMap<String, Vec<usize>>,
}

impl<T: Record> Default for Table<T> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            ids: HashMap::new(),
            emails: HashMap::new(),
        }
    }
}

impl<T: Record> Table<T> {
    pub(crate) fn rows(&self) -> &[T] {
        &self.rows
    }

    pub(crate) fn push(&mut self, row: T) -> usize {
        let at = self.rows.len();
        self.ids.entry(row.id()).or_insert(at);
        if let Some(key) = row.email_key() {
            self.emails.entry(key).or_default().push(at);
        }
        self.rows.push(row);
        at
    }

    /// Where the first record with this id is.
    pub(crate) fn position<Q>(&self, id: &Q) -> Option<usize>
    where
        T::Id: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.ids.get(id).copied()
    }

    pub(crate) fn get<Q>(&self, id: &Q) -> Option<&T>
    where
        T::Id: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.position(id).map(|at| &self.rows[at])
    }

    /// Positions of the records whose email key is `key`, in stored order.
    pub(crate) fn with_email(&self, key: &str) -> &[usize] {
        self.emails.get(key).map_or(&[], Vec::as_slice)
    }

    /// Changes the record at `at` (a position from this table), keeping the indexes true.
    pub(crate) fn modify<R>(&mut self, at: usize, f: impl FnOnce(&mut T) -> R) -> R {
        let (id, email) = (self.rows[at].id(), self.rows[at].email_key());
        let out = f(&mut self.rows[at]);
        let row = &self.rows[at];
        if row.id() != id {
            self.reindex();
        } else if row.email_key() != email {
            let new = row.email_key();
            if let Some(old) = email.and_then(|k| self.emails.get_mut(&k)) {
                old.retain(|p| *p != at);
            }
            if let Some(key) = new {
                let list = self.emails.entry(key).or_default();
                let i = list.partition_point(|p| *p < at);
                list.insert(i, at);
            }
        }
        out
    }

    /// Removes the record at `at` (a position from this table).
    pub(crate) fn remove_at(&mut self, at: usize) -> T {
        let row = self.rows.remove(at);
        self.reindex();
        row
    }

    /// Removes every record `pred` picks; answers how many. Positions after the
    /// first removed one shift, so the indexes are rebuilt (deletes are rare).
    pub(crate) fn remove_where(&mut self, pred: impl FnMut(&T) -> bool) -> usize {
        let mut pred = pred;
        let before = self.rows.len();
        self.rows.retain(|r| !pred(r));
        let removed = before - self.rows.len();
        if removed > 0 {
            self.reindex();
        }
        removed
    }

    fn reindex(&mut self) {
        self.ids.clear();
        self.emails.clear();
        for (at, row) in self.rows.iter().enumerate() {
            self.ids.entry(row.id()).or_insert(at);
            if let Some(key) = row.email_key() {
                self.emails.entry(key).or_default().push(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct R(u32, &'static str);

    impl Record for R {
        type Id = u32;
        fn id(&self) -> u32 {
            self.0
        }
        fn email_key(&self) -> Option<String> {
            (!self.1.is_empty()).then(|| self.1.trim().to_lowercase())
        }
    }

    #[test]
    fn the_indexes_follow_pushes_edits_and_removals() {
        let mut t = Table::default();
        t.push(R(1, "a@x.co"));
        t.push(R(2, " A@x.co"));
        t.push(R(3, ""));
        t.push(R(2, "b@x.co"));
        assert_eq!(t.position(&2), Some(1), "the first record with an id");
        assert_eq!(t.with_email("a@x.co"), &[0, 1]);
        assert!(t.with_email("").is_empty());

        t.modify(2, |r| r.1 = "a@x.co");
        assert_eq!(t.with_email("a@x.co"), &[0, 1, 2]);
        t.modify(0, |r| r.1 = "c@x.co");
        assert_eq!(t.with_email("a@x.co"), &[1, 2]);
        assert_eq!(t.with_email("c@x.co"), &[0]);

        assert_eq!(t.remove_where(|r| r.0 == 1), 1);
        assert_eq!(t.position(&1), None);
        assert_eq!(t.position(&2), Some(0));
        assert_eq!(t.with_email("a@x.co"), &[0, 1]);
        assert_eq!(t.with_email("b@x.co"), &[2]);

        t.push(R(7, ""));
        assert_eq!(t.remove_at(3), R(7, ""));
        t.modify(2, |r| r.0 = 9);
        assert_eq!(t.position(&9), Some(2));
        assert_eq!(t.position(&2), Some(0));
        assert_eq!(t.rows().len(), 3);
        assert_eq!(t.get(&3), Some(&R(3, "a@x.co")));
    }
}
