//! Sendwithus (email): a write target only. It cannot be listed; custsync knows it by
//! what custsync wrote there. Upsert by email, get and delete by email.
//!
//! Wire facts (DESIGN 4, 4b): HTTP Basic with the key as user and an empty password
//! (the shared client); answers inside `{success, status, customer}`; the email in a
//! path is percent-encoded, `+` and `@` included; GET or DELETE of an unknown email
//! answers 404. The remote id is the email. An email change is an upsert under the new
//! email followed by a delete of the old one, and answers the record under its new id.

pub mod mapping;
pub mod wire;

use async_trait::async_trait;
use reqwest::Method;

use super::http::{HttpClient, Request};
use super::wire::urlencode;
use super::{Capabilities, ListStyle, Provider, ProviderError, RemoteRecord};
use crate::model::{Email, Field, FieldSet, Projection, RemoteId};

pub struct Sendwithus {
    http: HttpClient,
}

impl Sendwithus {
    pub fn new(http: HttpClient) -> Self {
        Self { http }
    }

    fn path(email: &str) -> String {
        format!("/customers/{}", urlencode(email))
    }

    fn group_path(email: &str, group: &str) -> String {
        format!("{}/groups/{}", Self::path(email), urlencode(group))
    }

    /// `POST /customers`: an upsert, so safe to repeat.
    async fn upsert(&self, body: wire::CustomerInput) -> Result<RemoteRecord, ProviderError> {
        let req = Request::new(Method::POST, "/customers")
            .idempotent()
            .json(&body);
        let env: wire::Envelope = self.http.send_json(req).await?;
        match env.customer {
            Some(c) => Ok(mapping::to_record(c)),
            None => Err(ProviderError::decode(
                self.name(),
                "the upsert answered no customer",
            )),
        }
    }

    fn email_of(&self, record: &Projection) -> Result<Email, ProviderError> {
        record.email().ok_or_else(|| {
            ProviderError::unsupported(self.name(), "a Sendwithus customer needs a valid email")
        })
    }
}

#[async_trait]
impl Provider for Sendwithus {
    fn http(&self) -> &HttpClient {
        &self.http
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list: ListStyle::None,
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

    async fn create(&self, record: &Projection) -> Result<RemoteRecord, ProviderError> {
        let email = self.email_of(record)?;
        self.upsert(mapping::to_input(email.as_str(), record, &[], true))
            .await
    }

    async fn update(
        &self,
        id: &RemoteId,
        record: &Projection,
        changed: &[Field],
    ) -> Result<RemoteRecord, ProviderError> {
        let email = self.email_of(record)?;
        let rekey =
            changed.contains(&Field::Email) && !Field::Email.normalize(&id.0).eq(email.as_str());
        if !rekey {
            return self
                .upsert(mapping::to_input(&id.0, record, changed, false))
                .await;
        }
        // The email is the key: write the whole record under the new one first, so
        // nothing is lost if the delete of the old one fails.
        let moved = self
            .upsert(mapping::to_input(email.as_str(), record, &[], true))
            .await?;
        self.delete(id).await?;
        Ok(moved)
    }

    async fn delete(&self, id: &RemoteId) -> Result<(), ProviderError> {
        let resp = self
            .http
            .send(Request::new(Method::DELETE, Self::path(&id.0)))
            .await?;
        // Already gone is what we wanted.
        if resp.status.as_u16() == 404 {
            return Ok(());
        }
        self.http.expect_success(&resp)
    }

    async fn lookup(&self, email: &Email) -> Result<Vec<RemoteRecord>, ProviderError> {
        let resp = self
            .http
            .send(Request::get(Self::path(email.as_str())))
            .await?;
        if resp.status.as_u16() == 404 {
            return Ok(Vec::new());
        }
        self.http.expect_success(&resp)?;
        let env: wire::Envelope = self.http.decode(&resp.body)?;
        Ok(env.customer.map(mapping::to_record).into_iter().collect())
    }

    fn has_events(&self) -> bool {
        true
    }

    /// The customer's email logs, all at once (`GET /customers/{email}/logs` has no
    /// pages): `next` is always `None`. An unknown customer has none.
    async fn events(
        &self,
        id: &RemoteId,
        _cursor: Option<&str>,
    ) -> Result<super::EventPage, ProviderError> {
        let resp = self
            .http
            .send(Request::get(format!("{}/logs", Self::path(&id.0))))
            .await?;
        if resp.status.as_u16() == 404 {
            return Ok(super::EventPage::default());
        }
        self.http.expect_success(&resp)?;
        let body: serde_json::Value = self.http.decode(&resp.body)?;
        let mut page = super::EventPage::default();
        for log in body
            .get("logs")
            .and_then(|l| l.as_array())
            .cloned()
            .unwrap_or_default()
        {
            match mapping::to_event(log) {
                Some(e) => page.events.push(e),
                None => page.unreadable += 1,
            }
        }
        Ok(page)
    }

    async fn groups_of(&self, id: &RemoteId) -> Result<Option<Vec<String>>, ProviderError> {
        let resp = self.http.send(Request::get(Self::path(&id.0))).await?;
        if resp.status.as_u16() == 404 {
            return Ok(None);
        }
        self.http.expect_success(&resp)?;
        let env: wire::Envelope = self.http.decode(&resp.body)?;
        Ok(env.customer.map(|c| c.groups))
    }

    /// `POST /customers/{email}/groups/{group_id}` (DESIGN 4b: with the slash).
    async fn add_to_group(&self, id: &RemoteId, group: &str) -> Result<(), ProviderError> {
        let req = Request::new(Method::POST, Self::group_path(&id.0, group)).idempotent();
        let resp = self.http.send(req).await?;
        self.http.expect_success(&resp)
    }

    /// `DELETE /customers/{email}/groups/{group_id}`; an unknown customer is in no group.
    async fn remove_from_group(&self, id: &RemoteId, group: &str) -> Result<(), ProviderError> {
        let req = Request::new(Method::DELETE, Self::group_path(&id.0, group));
        let resp = self.http.send(req).await?;
        if resp.status.as_u16() == 404 {
            return Ok(());
        }
        self.http.expect_success(&resp)
    }

    /// There is nothing to list: a GET of an address nobody has proves the key works
    /// (404 is the expected answer, 401 a bad key).
    async fn check(&self) -> Result<(), ProviderError> {
        let resp = self
            .http
            .send(Request::get(Self::path("custsync-check@example.invalid")))
            .await?;
        if resp.status.as_u16() == 404 {
            return Ok(());
        }
        self.http.expect_success(&resp)
    }
}
