//! Malomo (shipping notifications): cursor listing, create, update, delete.
//!
//! Listing contract (DESIGN 4): follow a `Link: <..>; rel="next"` header when there is
//! one, else ask for `next=<id of the last customer>`; an empty page ends the list.
//! Malomo has no search, so a lookup by email walks the list.

pub mod mapping;
pub mod wire;

use async_trait::async_trait;
use reqwest::Method;

use super::http::{HttpClient, Request};
use super::wire::{decode_array, decode_items, id_and_email, link_next, urlencode};
use super::{
    Capabilities, Known, ListRequest, ListStyle, Listed, Page, Provider, ProviderError,
    RemoteRecord,
};
use crate::model::{Email, Field, FieldSet, Projection, RemoteId};

pub struct Malomo {
    http: HttpClient,
    /// Keys of write answers, as a listing keys its records.
    keys: Known,
}

impl Malomo {
    pub fn new(http: HttpClient) -> Self {
        Self {
            keys: Known::seed(http.provider(), &mapping::FIELDS),
            http,
        }
    }
}

#[async_trait]
impl Provider for Malomo {
    fn http(&self) -> &HttpClient {
        &self.http
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list: ListStyle::Cursor,
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
        let path = req
            .token
            .clone()
            .unwrap_or_else(|| "/customers".to_string());
        let resp = self.http.send(Request::get(path)).await?;
        self.http.expect_success(&resp)?;
        let raw = decode_array(self.name(), &resp.body)?;
        let Some(last) = raw.last() else {
            return Ok(Page::default());
        };
        let items = decode_items(
            &raw,
            "id",
            "email",
            mapping::to_record,
            req.known.as_deref(),
        );
        // The next page starts after the last record's id; one listed as before was
        // not decoded, so its id is read from its text.
        let last_id = match items.last() {
            Some(Listed::Unchanged(_)) => id_and_email(last, "id", "email").0.map(RemoteId),
            other => other.and_then(Listed::remote_id).cloned(),
        };
        let after_last = last_id.map(|id| format!("/customers?next={}", urlencode(&id.0)));
        // A `Link` to another origin is never followed: the contract's own cursor
        // takes over (DESIGN 4, 4c Requests).
        let next = match resp.header("link").and_then(link_next) {
            Some(link) => self.http.relative(&link).or(after_last),
            None => after_last,
        };
        Ok(Page {
            items,
            next,
            ..Page::default()
        })
    }

    async fn create(&self, record: &Projection) -> Result<RemoteRecord, ProviderError> {
        let body = mapping::to_input(record, self.fields().fields, true);
        let req = Request::new(Method::POST, "/customers").json(&body);
        self.http
            .send_answer(req, mapping::to_record, &self.keys)
            .await
    }

    async fn update(
        &self,
        id: &RemoteId,
        record: &Projection,
        changed: &[Field],
    ) -> Result<RemoteRecord, ProviderError> {
        let body = mapping::to_input(record, changed, false);
        let req = Request::new(Method::PUT, format!("/customers/{}", urlencode(&id.0))).json(&body);
        self.http
            .send_answer(req, mapping::to_record, &self.keys)
            .await
    }

    async fn delete(&self, id: &RemoteId) -> Result<(), ProviderError> {
        let resp = self
            .http
            .send(Request::new(
                Method::DELETE,
                format!("/customers/{}", urlencode(&id.0)),
            ))
            .await?;
        // Already gone is what we wanted.
        if resp.status.as_u16() == 404 {
            return Ok(());
        }
        self.http.expect_success(&resp)
    }

    async fn lookup(&self, email: &Email) -> Result<Vec<RemoteRecord>, ProviderError> {
        let mut found = self.lookup_all(std::slice::from_ref(email)).await?;
        Ok(found.remove(email).unwrap_or_default())
    }

    /// Malomo has no search: one walk of the whole list finds every email at once.
    async fn lookup_all(
        &self,
        emails: &[Email],
    ) -> Result<std::collections::HashMap<Email, Vec<RemoteRecord>>, ProviderError> {
        let mut found: std::collections::HashMap<Email, Vec<RemoteRecord>> =
            emails.iter().map(|e| (e.clone(), Vec::new())).collect();
        let mut req = ListRequest::default();
        loop {
            let page = self.list(&req).await?;
            for item in page.items {
                if let Listed::Record(r) = item {
                    if let Some(records) = r.projection.email().and_then(|e| found.get_mut(&e)) {
                        records.push(r);
                    }
                }
            }
            match page.next {
                Some(next) if req.token.as_ref() != Some(&next) => req.token = Some(next),
                _ => return Ok(found),
            }
        }
    }

    fn has_events(&self) -> bool {
        true
    }

    /// One page of `GET /customers/{id}/events`, paged as the customer list is (DESIGN
    /// 4b): a `Link` rel="next" when sent, else `next=<id of the last event>`; an
    /// empty page is the end for now. The cursor is the path of a page.
    async fn events(
        &self,
        id: &RemoteId,
        cursor: Option<&str>,
    ) -> Result<super::EventPage, ProviderError> {
        let base = format!("/customers/{}/events", urlencode(&id.0));
        // A cursor is a page of this customer's events, nothing else.
        let path = cursor
            .filter(|c| c.starts_with(&base))
            .map_or_else(|| base.clone(), str::to_string);
        let resp = self.http.send(Request::get(path.clone())).await?;
        self.http.expect_success(&resp)?;
        let items: Vec<serde_json::Value> = self.http.decode(&resp.body)?;
        let Some(last) = items
            .last()
            .and_then(|e| e.get("id"))
            .and_then(|v| v.as_str())
            .map(str::to_string)
        else {
            return Ok(super::EventPage::default());
        };
        let next = resp
            .header("link")
            .and_then(link_next)
            .and_then(|link| self.http.relative(&link))
            .filter(|n| n.starts_with(&base))
            .unwrap_or_else(|| format!("{base}?next={}", urlencode(&last)));
        let mut page = super::EventPage {
            // A cursor that does not move would read the same page for ever.
            next: (next != path).then_some(next),
            ..super::EventPage::default()
        };
        for e in items {
            match mapping::to_event(e) {
                Some(event) => page.events.push(event),
                None => page.unreadable += 1,
            }
        }
        Ok(page)
    }

    async fn check(&self) -> Result<(), ProviderError> {
        let resp = self.http.send(Request::get("/customers")).await?;
        self.http.expect_success(&resp)
    }
}
