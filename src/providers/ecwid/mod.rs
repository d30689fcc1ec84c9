//! Ecwid (second storefront): offset/limit listing, create, update and delete, all
//! answered inside `{"data": {"id", "type", "attributes"}}`.
//!
//! Wire facts (DESIGN 4, 4b): `Authorization: Bearer KEY` (the shared client); `limit`
//! at most 100; writes are POSTs (`add_customer`, `update_customer/{id}`,
//! `delete_customer/{id}`), the update and delete marked idempotent so the shared
//! client may retry them; errors `{errorMessage, errorCode}` with 400, 404 or 409.
//! Write answers do not carry the record: the snapshot is what was written.
//!
//! A create with an email Ecwid already has answers 409: the connector then looks the
//! email up and answers the existing record, so it is linked instead of duplicated.
//! The lookup walks the customer search with Ecwid's `email` filter and keeps exact
//! matches only, so it is right whether or not the server applies the filter (the
//! sandbox does).

pub mod mapping;
pub mod wire;

use async_trait::async_trait;
use reqwest::Method;

use super::http::{HttpClient, Request};
use super::wire::{decode_borrowed, decode_items, urlencode};
use super::{
    Capabilities, Known, ListRequest, ListStyle, Listed, Page, Provider, ProviderError,
    RemoteRecord,
};
use crate::model::{Email, Field, FieldSet, Projection, RemoteId};

/// The path before every endpoint, after `base_url`.
pub const API: &str = "/api/json/v1/ecwid";

pub struct Ecwid {
    http: HttpClient,
    limit: u32,
}

impl Ecwid {
    pub fn new(http: HttpClient, limit: u32) -> Self {
        Self {
            http,
            limit: limit.clamp(1, 100),
        }
    }

    /// One page of the customer search from `offset`, optionally filtered by email,
    /// with the offset of the next page and the total Ecwid states.
    async fn search(
        &self,
        offset: u64,
        email: Option<&Email>,
        known: Option<&Known>,
    ) -> Result<Page, ProviderError> {
        let mut req = Request::get(format!("{API}/customers"));
        if let Some(email) = email {
            req = req.query("email", email.as_str());
        }
        let req = req.query("offset", offset).query("limit", self.limit);
        let resp = self.http.send(req).await?;
        self.http.expect_success(&resp)?;
        let env: wire::Envelope<wire::CustomerList> = decode_borrowed(self.name(), &resp.body)?;
        let page = env.data.attributes;
        Ok(Page {
            items: decode_items(&page.items, "id", "email", mapping::listed, known),
            next: next_offset(offset, &page).map(|n| n.to_string()),
            total: Some(page.total),
            incomplete: None,
        })
    }

    /// `GET customer/{id}`.
    async fn get(&self, id: &RemoteId) -> Result<wire::Customer, ProviderError> {
        let req = Request::get(format!("{API}/customer/{}", urlencode(&id.0)));
        let env: wire::Envelope<wire::Customer> = self.http.send_json(req).await?;
        Ok(env.data.attributes)
    }

    /// After a 409 on create: the record that already has this email.
    async fn existing(
        &self,
        record: &Projection,
        conflict: ProviderError,
    ) -> Result<RemoteRecord, ProviderError> {
        let Some(email) = record.email() else {
            return Err(conflict);
        };
        let mut found = self.lookup(&email).await?;
        // The most recently updated one, should Ecwid hold several.
        found.sort_by_key(|r| r.updated_at);
        match found.pop() {
            Some(r) => {
                tracing::info!(provider = %self.name(), id = %r.id, "create found the email already there: linked");
                Ok(r)
            }
            None => Err(conflict),
        }
    }
}

/// The offset after this page, or `None` at the end (an empty page always ends it).
fn next_offset(asked: u64, page: &wire::CustomerList) -> Option<u64> {
    let seen = page.items.len() as u64;
    let next = page.offset.max(asked) + seen;
    (seen > 0 && next < page.total).then_some(next)
}

#[async_trait]
impl Provider for Ecwid {
    fn http(&self) -> &HttpClient {
        &self.http
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list: ListStyle::Offset,
            incremental: false,
            create: true,
            update: true,
            delete: true,
            lookup: true,
            updated_at: true,
        }
    }

    fn fields(&self) -> &FieldSet {
        &mapping::FIELDS
    }

    async fn list(&self, req: &ListRequest) -> Result<Page, ProviderError> {
        let offset = match req.token.as_deref() {
            None => 0,
            Some(t) => t.parse::<u64>().map_err(|_| {
                ProviderError::decode(self.name(), format!("bad offset token {t:?}"))
            })?,
        };
        self.search(offset, None, req.known.as_deref()).await
    }

    async fn create(&self, record: &Projection) -> Result<RemoteRecord, ProviderError> {
        let body = mapping::to_input(record, &[], true, None);
        let req = Request::new(Method::POST, format!("{API}/add_customer")).json(&body);
        let resp = self.http.send(req).await?;
        if resp.status.as_u16() == 409 {
            let conflict = self
                .http
                .status_error(resp.status, &resp.headers, &resp.body);
            return self.existing(record, conflict).await;
        }
        self.http.expect_success(&resp)?;
        let env: wire::Envelope<wire::Empty> = self.http.decode(&resp.body)?;
        let id = env
            .data
            .id
            .ok_or_else(|| ProviderError::decode(self.name(), "add_customer answered no id"))?;
        Ok(RemoteRecord {
            id: RemoteId(id),
            projection: mapping::written(record),
            updated_at: None,
            absent: Vec::new(),
            listed_key: None,
        })
    }

    async fn update(
        &self,
        id: &RemoteId,
        record: &Projection,
        changed: &[Field],
    ) -> Result<RemoteRecord, ProviderError> {
        let touches_person = changed
            .iter()
            .any(|f| matches!(f, Field::FirstName | Field::LastName | Field::Phone));
        // The billing person holds the address too: send it back as Ecwid has it.
        let current = if touches_person {
            self.get(id).await?.billing_person
        } else {
            None
        };
        let body = mapping::to_input(record, changed, false, current.as_ref());
        let req = Request::new(
            Method::POST,
            format!("{API}/update_customer/{}", urlencode(&id.0)),
        )
        .idempotent()
        .json(&body);
        let _: wire::Envelope<wire::UpdateCount> = self.http.send_json(req).await?;
        Ok(RemoteRecord {
            id: id.clone(),
            projection: mapping::written(record),
            updated_at: None,
            absent: Vec::new(),
            listed_key: None,
        })
    }

    async fn delete(&self, id: &RemoteId) -> Result<(), ProviderError> {
        let req = Request::new(
            Method::POST,
            format!("{API}/delete_customer/{}", urlencode(&id.0)),
        )
        .idempotent();
        let resp = self.http.send(req).await?;
        // Already gone is what we wanted.
        if resp.status.as_u16() == 404 {
            return Ok(());
        }
        self.http.expect_success(&resp)
    }

    async fn lookup(&self, email: &Email) -> Result<Vec<RemoteRecord>, ProviderError> {
        let mut found = Vec::new();
        let mut offset = 0;
        loop {
            let page = self.search(offset, Some(email), None).await?;
            found.extend(page.items.into_iter().filter_map(|item| match item {
                Listed::Record(r) if r.projection.email().as_ref() == Some(email) => Some(r),
                _ => None,
            }));
            match page.next.and_then(|n| n.parse().ok()) {
                Some(n) => offset = n,
                None => return Ok(found),
            }
        }
    }

    async fn check(&self) -> Result<(), ProviderError> {
        let req = Request::get(format!("{API}/customers")).query("limit", 1);
        let resp = self.http.send(req).await?;
        self.http.expect_success(&resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(offset: u64, items: usize, total: u64) -> wire::CustomerList<'static> {
        let null: &'static serde_json::value::RawValue =
            serde_json::from_str("null").expect("null is JSON");
        wire::CustomerList {
            total,
            count: items as u64,
            offset,
            limit: 100,
            items: vec![null; items],
        }
    }

    #[test]
    fn offsets_advance_until_the_total() {
        assert_eq!(next_offset(0, &page(0, 100, 250)), Some(100));
        assert_eq!(next_offset(200, &page(200, 50, 250)), None);
        assert_eq!(next_offset(0, &page(0, 0, 5)), None);
        assert_eq!(next_offset(0, &page(0, 0, 0)), None);
    }
}
