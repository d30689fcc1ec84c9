//! All five emulators at once, and the configuration that points custsync at them:
//! what the demo, the benchmark and the five-provider tests start from.

use super::{ecwid, malomo, nuvemshop, partially, sendwithus, RequestLog};

/// The labels the sandbox configuration gives the five providers, in priority order.
pub const NAMES: [(&str, &str); 5] = [
    ("store", "nuvemshop"),
    ("storefront", "ecwid"),
    ("shipping", "malomo"),
    ("plans", "partially"),
    ("email", "sendwithus"),
];

/// Options of the emulators whose behaviour tests and benchmarks vary (Nuvemshop's
/// leaky bucket, Ecwid's lagging index, Malomo's page size); the others start with
/// their defaults.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub nuvemshop: nuvemshop::Options,
    pub ecwid: ecwid::Options,
    pub malomo: malomo::Options,
}

pub struct Sandboxes {
    pub nuvemshop: nuvemshop::Nuvemshop,
    pub ecwid: ecwid::Ecwid,
    pub malomo: malomo::Malomo,
    pub partially: partially::Partially,
    pub sendwithus: sendwithus::Sendwithus,
}

impl Sandboxes {
    /// Starts the five emulators with their default options.
    pub async fn start() -> std::io::Result<Sandboxes> {
        Self::start_with(Options::default()).await
    }

    /// Starts the five emulators, Nuvemshop, Ecwid and Malomo with the given options.
    pub async fn start_with(opts: Options) -> std::io::Result<Sandboxes> {
        Ok(Sandboxes {
            nuvemshop: nuvemshop::Nuvemshop::start(opts.nuvemshop).await?,
            ecwid: ecwid::Ecwid::start(opts.ecwid).await?,
            malomo: malomo::Malomo::start(opts.malomo).await?,
            partially: partially::Partially::start(partially::Options::default()).await?,
            sendwithus: sendwithus::Sendwithus::start(sendwithus::Options::default()).await?,
        })
    }

    /// `(label, kind, base_url, api_key)` of each emulator, in priority order.
    pub fn endpoints(&self) -> Vec<(&'static str, &'static str, String, String)> {
        let urls = [
            (self.nuvemshop.base_url(), self.nuvemshop.api_key()),
            (self.ecwid.base_url(), self.ecwid.api_key()),
            (self.malomo.base_url(), self.malomo.api_key()),
            (self.partially.base_url(), self.partially.api_key()),
            (self.sendwithus.base_url(), self.sendwithus.api_key()),
        ];
        NAMES
            .iter()
            .zip(urls)
            .map(|((name, kind), (url, key))| (*name, *kind, url, key))
            .collect()
    }

    /// `[providers.*]` tables for the five emulators, each limited to `per_second`.
    pub fn providers_toml(&self, per_second: f64, burst: u32) -> String {
        self.endpoints()
            .into_iter()
            .map(|(name, kind, url, key)| {
                format!(
                    "[providers.{name}]\nkind = \"{kind}\"\nbase_url = \"{url}\"\napi_key = \"{key}\"\nrate_limit = {{ per_second = {per_second:.1}, burst = {burst} }}\n"
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A whole configuration: the store at `store_url`, the five providers.
    pub fn config_toml(&self, store_url: &str, per_second: f64, burst: u32) -> String {
        format!(
            "[store]\nurl = \"{store_url}\"\n\n{}",
            self.providers_toml(per_second, burst)
        )
    }

    pub fn logs(&self) -> [(&'static str, &RequestLog); 5] {
        [
            ("store", self.nuvemshop.log()),
            ("storefront", self.ecwid.log()),
            ("shipping", self.malomo.log()),
            ("plans", self.partially.log()),
            ("email", self.sendwithus.log()),
        ]
    }

    /// Write requests (POST, PUT, PATCH, DELETE) all five received.
    pub fn writes(&self) -> usize {
        self.logs().iter().map(|(_, l)| l.writes().len()).sum()
    }

    pub fn clear_logs(&self) {
        for (_, l) in self.logs() {
            l.clear();
        }
    }

    /// Seeds each emulator with the customers of its provider's document.
    pub fn seed_document_examples(&self) {
        self.nuvemshop.seed_document_examples();
        self.ecwid.seed_document_examples();
        self.malomo.insert(malomo::Customer::new(
            "johnny@rosevideo.com",
            Some("Johnny"),
            Some("Rose"),
            Some("555-555-5555"),
        ));
        self.partially.seed_document_examples();
        self.sendwithus.seed_document_examples();
    }
}
