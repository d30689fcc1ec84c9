//! Partial.ly (payment plans): numbered pages, create, update, and `gdpr_remove` as
//! the delete.
//!
//! Wire facts (DESIGN 4, 4b): `Authorization: Bearer KEY` (the shared client), pages
//! are 1-based and end when `page_number >= total_pages`, a create answers 200 or 201,
//! `q` containing `@` is an exact email search. `gdpr_remove` deletes a customer
//! without payment history and anonymizes one with history (it then lists with a null
//! email, which the engine counts as deleted); it is refused with a 4xx `{message}`
//! for a customer with an open payment plan, which comes back as a non-retryable
//! `ProviderError::Status` carrying that message for the engine to park.

pub mod mapping;
pub mod wire;

use async_trait::async_trait;
use reqwest::Method;

use super::http::{HttpClient, Request};
use super::wire::{decode_borrowed, decode_items, urlencode};
use super::{
    Capabilities, Known, ListRequest, ListStyle, Page, Provider, ProviderError, RemoteRecord,
};
use crate::model::{Email, Field, FieldSet, Projection, RemoteId};

pub struct Partially {
    http: HttpClient,
    per_page: u32,
    /// Keys of write answers, as a listing keys its records.
    keys: Known,
}

impl Partially {
    pub fn new(http: HttpClient, per_page: u32) -> Self {
        Self {
            keys: Known::seed(http.provider(), &mapping::FIELDS),
            http,
            per_page: per_page.clamp(1, 100),
        }
    }

    /// The answer to one page of `GET /customer`, optionally searched with `q` (read
    /// with [`wire::CustomerPage`], which borrows from it).
    async fn page(&self, page: u64, q: Option<&str>) -> Result<bytes::Bytes, ProviderError> {
        let mut req = Request::get("/customer");
        if let Some(q) = q {
            req = req.query("q", q);
        }
        let req = req.query("page", page).query("per_page", self.per_page);
        let resp = self.http.send(req).await?;
        self.http.expect_success(&resp)?;
        Ok(resp.body)
    }
}

/// The page after `asked` when the answer says there is one. The server's
/// `page_number` wins, but the listing never goes backwards (no endless loop on a
/// server that echoes a smaller number).
fn next_page(asked: u64, answer: &wire::CustomerPage) -> Option<u64> {
    let current = answer.page_number.max(asked);
    (current < answer.total_pages).then_some(current + 1)
}

/// Why an answer proves the listing incomplete: it is not the page that was asked.
fn wrong_page(asked: u64, answer: &wire::CustomerPage) -> Option<String> {
    (answer.page_number != asked).then(|| {
        format!(
            "page {asked} was asked and page {} answered",
            answer.page_number
        )
    })
}

#[async_trait]
impl Provider for Partially {
    fn http(&self) -> &HttpClient {
        &self.http
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list: ListStyle::Pages,
            incremental: false,
            create: true,
            update: true,
            delete: true,
            lookup: true,
            updated_at: false,
        }
    }

    fn fields(&self) -> &FieldSet {
        &mapping::FIELDS
    }

    async fn list(&self, req: &ListRequest) -> Result<Page, ProviderError> {
        let asked = match req.token.as_deref() {
            None => 1,
            Some(t) => t
                .parse::<u64>()
                .map_err(|_| ProviderError::decode(self.name(), format!("bad page token {t:?}")))?,
        };
        let body = self.page(asked, None).await?;
        let answer: wire::CustomerPage = decode_borrowed(self.name(), &body)?;
        Ok(Page {
            items: decode_items(
                &answer.customers,
                "id",
                "email",
                mapping::to_record,
                req.known.as_deref(),
            ),
            next: next_page(asked, &answer).map(|n| n.to_string()),
            total: answer.total_entries,
            incomplete: wrong_page(asked, &answer),
        })
    }

    async fn create(&self, record: &Projection) -> Result<RemoteRecord, ProviderError> {
        let body = mapping::to_input(record, &[], true);
        let req = Request::new(Method::POST, "/customer").json(&body);
        // 200 and 201 are both success.
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
        let req = Request::new(Method::PUT, format!("/customer/{}", urlencode(&id.0))).json(&body);
        self.http
            .send_answer(req, mapping::to_record, &self.keys)
            .await
    }

    async fn delete(&self, id: &RemoteId) -> Result<(), ProviderError> {
        let path = format!("/customer/gdpr_remove/{}", urlencode(&id.0));
        let resp = self.http.send(Request::new(Method::PUT, path)).await?;
        // Already gone is what we wanted.
        if resp.status.as_u16() == 404 {
            return Ok(());
        }
        // A refusal (open payment plan) is a 4xx carrying the provider's message.
        self.http.expect_success(&resp)?;
        if let Ok(m) = serde_json::from_slice::<wire::Message>(&resp.body) {
            tracing::debug!(provider = %self.name(), id = %id, message = %m.message, "gdpr_remove");
        }
        Ok(())
    }

    /// `q` containing `@` is an exact email search; the answer is still filtered here.
    async fn lookup(&self, email: &Email) -> Result<Vec<RemoteRecord>, ProviderError> {
        let mut found = Vec::new();
        let mut page = 1;
        loop {
            let body = self.page(page, Some(email.as_str())).await?;
            let answer: wire::CustomerPage = decode_borrowed(self.name(), &body)?;
            if let Some(why) = wrong_page(page, &answer) {
                return Err(ProviderError::decode(self.name(), format!("lookup: {why}")));
            }
            let next = next_page(page, &answer);
            for c in &answer.customers {
                let Ok(c) = serde_json::from_str::<wire::Customer>(c.get()) else {
                    continue;
                };
                let r = mapping::to_record(c);
                if r.projection.email().as_ref() == Some(email) {
                    found.push(r);
                }
            }
            match next {
                Some(n) => page = n,
                None => return Ok(found),
            }
        }
    }

    async fn check(&self) -> Result<(), ProviderError> {
        let req = Request::get("/customer").query("per_page", 1);
        let resp = self.http.send(req).await?;
        self.http.expect_success(&resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(number: u64, total: u64) -> wire::CustomerPage<'static> {
        wire::CustomerPage {
            total_pages: total,
            total_entries: None,
            page_size: 10,
            page_number: number,
            customers: vec![],
        }
    }

    #[test]
    fn pages_end_at_total_pages() {
        assert_eq!(next_page(1, &page(1, 3)), Some(2));
        assert_eq!(next_page(3, &page(3, 3)), None);
        assert_eq!(next_page(4, &page(4, 3)), None);
        assert_eq!(next_page(1, &page(1, 0)), None);
        // A server echoing page 1 for page 2 does not send the listing back to 2.
        assert_eq!(next_page(2, &page(1, 3)), Some(3));
    }
}
