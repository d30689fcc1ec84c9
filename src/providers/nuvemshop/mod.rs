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
use super::wire::{decode_array, decode_items, link_next};
use super::{
    Capabilities, Known, ListRequest, ListStyle, Listed, Page, Provider, ProviderError,
    RemoteRecord,
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

    /// One page at `path`: the `first` of a listing, or one the provider `linked`.
    async fn page(
        &self,
        path: String,
        first: bool,
        linked: bool,
        known: Option<&Known>,
    ) -> Result<Page, ProviderError> {
        let resp = self.http.send(Request::get(path.clone())).await?;
        if resp.status.as_u16() == 404 {
            return past_the_end(&self.http, &resp, first, linked);
        }
        self.http.expect_success(&resp)?;
        let items = decode_array(self.name(), &resp.body)?;
        let full = items.len() as u32 >= self.per_page;
        let next = match resp.header("link") {
            // A next link on another host name for the same API (`localhost` for
            // `127.0.0.1`, one of Tiendanube's domains for another) is still a next
            // page, and one that the provider says is there.
            Some(link) => link_next(link)
                .and_then(|l| self.http.relative(&l).or_else(|| following_page(&path))),
            None if full => following_page(&path).map(|p| format!("{GUESSED}{p}")),
            None => None,
        };
        Ok(Page {
            items: decode_items(&items, "id", "email", mapping::to_record, known),
            next,
            total: resp
                .header("x-total-count")
                .and_then(|t| t.trim().parse().ok()),
            incomplete: None,
        })
    }
}

/// Marks a page token that custsync worked out itself (a full page without a `Link`
/// header), as opposed to one the provider linked: only past a guessed page is a 404
/// the end of the listing.
const GUESSED: &str = "guessed:";

/// A 404 answer to a listing request. On the first page it is an error (a wrong store
/// id is not an empty store); past a page the provider linked as `rel="next"` it
/// proves the listing incomplete; past a guessed page it is the end (DESIGN 4b).
fn past_the_end(
    http: &HttpClient,
    resp: &super::http::Response,
    first: bool,
    linked: bool,
) -> Result<Page, ProviderError> {
    if first {
        return Err(http.status_error(resp.status, &resp.headers, &resp.body));
    }
    let incomplete = linked.then(|| "a page linked as rel=\"next\" answered 404".to_string());
    Ok(Page {
        incomplete,
        ..Page::default()
    })
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
        let known = req.known.as_deref();
        match req.token.as_deref() {
            None => self.page(self.first_page(req), true, false, known).await,
            Some(t) => match t.strip_prefix(GUESSED) {
                Some(path) => self.page(path.to_string(), false, false, known).await,
                None => self.page(t.to_string(), false, true, known).await,
            },
        }
    }

    async fn create(&self, record: &Projection) -> Result<RemoteRecord, ProviderError> {
        let body = mapping::to_body(record, &[], true);
        let c: wire::Customer = self
            .http
            .send_json(Request::new(Method::POST, "/customers").json(&body))
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
        .json(&body);
        let c: wire::Customer = self.http.send_json(req).await?;
        Ok(mapping::to_record(c))
    }

    async fn lookup(&self, email: &Email) -> Result<Vec<RemoteRecord>, ProviderError> {
        // `q` is a substring search over name, email and identification: the exact
        // matches can be on any page, so every page is read.
        let first = format!(
            "/customers?q={}&page=1&per_page={}",
            super::wire::urlencode(email.as_str()),
            self.per_page
        );
        let mut page = self.page(first, true, false, None).await?;
        let mut found = Vec::new();
        loop {
            // A search that fell short might have missed the record: a create after
            // it could duplicate one.
            if let Some(why) = page.incomplete.take() {
                return Err(ProviderError::decode(self.name(), format!("lookup: {why}")));
            }
            found.extend(page.items.into_iter().filter_map(|item| match item {
                Listed::Record(r) if r.projection.email().as_ref() == Some(email) => Some(r),
                _ => None,
            }));
            let Some(token) = page.next else {
                return Ok(found);
            };
            let req = ListRequest {
                token: Some(token),
                ..ListRequest::default()
            };
            page = self.list(&req).await?;
        }
    }

    async fn check(&self) -> Result<(), ProviderError> {
        let resp = self
            .http
            .send(Request::get("/customers").query("per_page", 1))
            .await?;
        // A 404 here is a wrong store id, not an empty store.
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
