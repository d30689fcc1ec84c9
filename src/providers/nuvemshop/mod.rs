//! Nuvemshop (Tiendanube): numbered pages with `updated_at_min` for incremental
//! listing, create and update; the document has no delete, so this connector cannot.
//!
//! Wire facts (DESIGN 4, 4b): `Authentication: bearer KEY` and a `User-Agent` on every
//! request (set by the shared client), `per_page` at most 200, a `Link` header to the
//! next page, 404 past the last page, `200 []` when nothing matches.

pub mod mapping;
pub mod wire;

use async_trait::async_trait;
use chrono::SecondsFormat;
use reqwest::Method;

use super::http::{HttpClient, Request};
use super::wire::{decode_items, link_next};
use super::{
    Capabilities, ListRequest, ListStyle, Listed, Page, Provider, ProviderError, RemoteRecord,
};
use crate::model::{Email, Field, FieldSet, Projection, RemoteId};

pub struct Nuvemshop {
    http: HttpClient,
    per_page: u32,
}

impl Nuvemshop {
    pub fn new(http: HttpClient, per_page: u32) -> Self {
        Self {
            http,
            per_page: per_page.clamp(1, 200),
        }
    }

    fn first_page(&self, req: &ListRequest) -> String {
        let mut path = format!("/customers?page=1&per_page={}", self.per_page);
        if let Some(since) = req.since {
            let since = since.to_rfc3339_opts(SecondsFormat::Secs, true);
            path.push_str(&format!(
                "&updated_at_min={}",
                super::wire::urlencode(&since)
            ));
        }
        path
    }
}

/// The path of the page after `path` (`page=N` incremented).
fn following_page(path: &str) -> Option<String> {
    let (base, query) = path.split_once('?')?;
    let mut found = false;
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some(("page", n)) => {
                found = true;
                format!("page={}", n.parse::<u64>().unwrap_or(1) + 1)
            }
            _ => kv.to_string(),
        })
        .collect();
    found.then(|| format!("{base}?{}", parts.join("&")))
}

#[async_trait]
impl Provider for Nuvemshop {
    fn http(&self) -> &HttpClient {
        &self.http
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list: ListStyle::Pages,
            incremental: true,
            create: true,
            update: true,
            delete: false,
            lookup: true,
            updated_at: true,
        }
    }

    fn fields(&self) -> &FieldSet {
        &mapping::FIELDS
    }

    async fn list(&self, req: &ListRequest) -> Result<Page, ProviderError> {
        let path = req.token.clone().unwrap_or_else(|| self.first_page(req));
        let resp = self.http.send(Request::get(path.clone())).await?;
        // Past the last page.
        if resp.status.as_u16() == 404 {
            return Ok(Page::default());
        }
        self.http.expect_success(&resp)?;
        let items: Vec<serde_json::Value> = self.http.decode(&resp.body)?;
        let full = items.len() as u32 >= self.per_page;
        let next = match resp.header("link") {
            // A next link on another host name for the same API (`localhost` for
            // `127.0.0.1`, one of Tiendanube's domains for another) is still a next page.
            Some(link) => link_next(link)
                .and_then(|l| self.http.relative(&l).or_else(|| following_page(&path))),
            None if full => following_page(&path),
            None => None,
        };
        let items = decode_items(items, "id", "email", mapping::to_record);
        Ok(Page {
            items,
            next,
            ..Page::default()
        })
    }

    async fn create(&self, record: &Projection) -> Result<RemoteRecord, ProviderError> {
        let body = mapping::to_body(record, &[], true);
        let c: wire::Customer = self
            .http
            .send_json(Request::new(Method::POST, "/customers").json(body))
            .await?;
        Ok(mapping::to_record(c))
    }

    async fn update(
        &self,
        id: &RemoteId,
        record: &Projection,
        changed: &[Field],
    ) -> Result<RemoteRecord, ProviderError> {
        let body = mapping::to_body(record, changed, false);
        let req = Request::new(
            Method::PUT,
            format!("/customers/{}", super::wire::urlencode(&id.0)),
        )
        .json(body);
        let c: wire::Customer = self.http.send_json(req).await?;
        Ok(mapping::to_record(c))
    }

    async fn lookup(&self, email: &Email) -> Result<Vec<RemoteRecord>, ProviderError> {
        // `q` is a substring search over name, email and identification: the exact
        // matches can be on any page, so every page is read.
        let mut token = Some(format!(
            "/customers?q={}&page=1&per_page={}",
            super::wire::urlencode(email.as_str()),
            self.per_page
        ));
        let mut found = Vec::new();
        while let Some(path) = token.take() {
            let req = ListRequest {
                token: Some(path),
                since: None,
            };
            let page = self.list(&req).await?;
            found.extend(page.items.into_iter().filter_map(|item| match item {
                Listed::Record(r) if r.projection.email().as_ref() == Some(email) => Some(r),
                _ => None,
            }));
            token = page.next;
        }
        Ok(found)
    }

    async fn check(&self) -> Result<(), ProviderError> {
        let resp = self
            .http
            .send(Request::get("/customers").query("per_page", 1))
            .await?;
        if resp.status.as_u16() == 404 {
            return Ok(());
        }
        self.http.expect_success(&resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_page_path() {
        assert_eq!(
            following_page("/customers?page=1&per_page=200&updated_at_min=x").as_deref(),
            Some("/customers?page=2&per_page=200&updated_at_min=x")
        );
        assert_eq!(following_page("/customers"), None);
    }
}
