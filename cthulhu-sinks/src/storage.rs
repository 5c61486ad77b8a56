//! Where recordings go: a local directory or an object store.
//!
//! [`Storage::from_config`] turns a [`StorageConfig`] (`file:///var/lib/cthulhu/rec`,
//! `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`) into a
//! [`Storage`]. Credentials come from the config or, when it has none, from the
//! standard environment variables of each cloud (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, ...;
//! `GOOGLE_SERVICE_ACCOUNT`, ...; `AZURE_STORAGE_ACCOUNT_NAME`,
//! `AZURE_STORAGE_ACCOUNT_KEY`, ...). They are handed to `object_store` and never
//! logged or shown: [`Storage::describe`] and `Debug` print neither them nor the
//! endpoint's user info.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cthulhu_core::policy::Secret;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, GetOptions, ObjectStore, RetryConfig};

use crate::SinkError;

/// Settings of one storage target (`[storage.NAME]` in the server config).
#[derive(Clone, Default)]
pub struct StorageConfig {
    /// `file:///absolute/dir`, `s3://bucket[/prefix]`, `gs://bucket[/prefix]` or
    /// `az://container[/prefix]`.
    pub url: String,
    /// An S3-compatible or Azure endpoint (`http://127.0.0.1:9000` for MinIO or
    /// Garage, `https://ACCOUNT.r2.cloudflarestorage.com` for R2). With an endpoint,
    /// S3 requests are path-style (`endpoint/bucket/key`).
    pub endpoint: Option<String>,
    /// The region (S3; `us-east-1` when neither this nor `AWS_REGION` is set; R2
    /// wants `auto`).
    pub region: Option<String>,
    /// S3 access key id (else `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<Secret>,
    /// S3 secret access key (else `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<Secret>,
    /// S3 session token (else `AWS_SESSION_TOKEN`).
    pub session_token: Option<Secret>,
    /// Whether plain `http://` is allowed. Default: true when `endpoint` is `http://`,
    /// else false.
    pub allow_http: Option<bool>,
    /// Further `object_store` options by key, for the store of the URL's scheme
    /// (`AmazonS3ConfigKey`, `GoogleConfigKey`, `AzureConfigKey` and client options
    /// such as `timeout` or `connect_timeout`), e.g. `google_service_account_key` or
    /// `azure_storage_account_name`. Values may be secrets: they are never logged.
    pub options: BTreeMap<String, String>,
}

impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint.as_deref().map(redact_endpoint))
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .field("allow_http", &self.allow_http)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// An object store that offers the low-level multipart calls (S3, GCS, Azure, and
/// `object_store`'s in-memory store).
pub trait MultipartObjectStore: ObjectStore + MultipartStore {}

impl<T: ObjectStore + MultipartStore> MultipartObjectStore for T {}

pub(crate) enum Backend {
    /// A local directory: files are written in place (see the crate docs).
    Local { root: PathBuf },
    /// An object store; object keys start with `prefix`.
    Object {
        store: Arc<dyn MultipartObjectStore>,
        prefix: String,
    },
}

/// A configured storage target. Shared by the recordings that use it.
pub struct Storage {
    pub(crate) backend: Backend,
    description: String,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Storage({})", self.description)
    }
}

/// Retries inside `object_store` are kept short: the recorder retries parts itself,
/// under the same part number, for as long as its own policy says.
fn store_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 2,
        retry_timeout: Duration::from_secs(30),
    }
}

impl Storage {
    /// Builds a storage target from its settings. Checks the settings, opens no
    /// connection and creates no directory.
    pub fn from_config(config: &StorageConfig) -> Result<Arc<Self>, SinkError> {
        let url = url::Url::parse(&config.url).map_err(|e| {
            SinkError::Config(format!(
                "storage url {:?}: {e}",
                redact_endpoint(&config.url)
            ))
        })?;
        let prefix = url.path().trim_matches('/').to_owned();
        if !prefix.is_empty() {
            crate::template::check_name(&prefix)
                .map_err(|why| SinkError::Config(format!("storage url path {prefix:?}: {why}")))?;
        }
        let http_endpoint = config
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let allow_http = config.allow_http.unwrap_or(http_endpoint);
        let bucket = || -> Result<String, SinkError> {
            match url.host_str() {
                Some(b) if !b.is_empty() => Ok(b.to_owned()),
                _ => Err(SinkError::Config(format!(
                    "storage url {:?} names no bucket or container",
                    config.url
                ))),
            }
        };
        let no_s3_credentials = |scheme: &str| -> Result<(), SinkError> {
            if config.access_key_id.is_some()
                || config.secret_access_key.is_some()
                || config.session_token.is_some()
            {
                return Err(SinkError::Config(format!(
                    "access_key_id/secret_access_key/session_token are S3 settings; for \
                     {scheme}:// put credentials in options (or the environment)"
                )));
            }
            Ok(())
        };
        let store: Arc<dyn MultipartObjectStore> = match url.scheme() {
            "file" => {
                if url
                    .host_str()
                    .is_some_and(|h| !h.is_empty() && h != "localhost")
                {
                    return Err(SinkError::Config(format!(
                        "file storage url {:?} must be file:///absolute/dir",
                        config.url
                    )));
                }
                if config.endpoint.is_some() || !config.options.is_empty() {
                    return Err(SinkError::Config(
                        "endpoint and options do not apply to file:// storage".into(),
                    ));
                }
                no_s3_credentials("file")?;
                let root = url.to_file_path().map_err(|()| {
                    SinkError::Config(format!("{:?} is not an absolute file path", config.url))
                })?;
                return Ok(Arc::new(Self::local(root)));
            }
            "s3" | "s3a" => {
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket()?)
                    .with_retry(store_retry());
                if let Some(region) = &config.region {
                    b = b.with_region(region);
                }
                if let Some(endpoint) = &config.endpoint {
                    b = b
                        .with_endpoint(endpoint)
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(k) = &config.access_key_id {
                    b = b.with_access_key_id(k.expose());
                }
                if let Some(k) = &config.secret_access_key {
                    b = b.with_secret_access_key(k.expose());
                }
                if let Some(k) = &config.session_token {
                    b = b.with_token(k.expose());
                }
                if allow_http {
                    b = b.with_allow_http(true);
                }
                for (key, value) in &config.options {
                    let k: AmazonS3ConfigKey =
                        key.parse().map_err(|_| unknown_option(key, "s3"))?;
                    b = b.with_config(k, value);
                }
                Arc::new(b.build().map_err(|e| build_error("s3", &e))?)
            }
            "gs" => {
                no_s3_credentials("gs")?;
                if config.endpoint.is_some() {
                    return Err(SinkError::Config(
                        "endpoint does not apply to gs:// (use options.google_... keys)".into(),
                    ));
                }
                let mut b = GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket()?)
                    .with_retry(store_retry());
                if allow_http {
                    b = b.with_client_options(
                        object_store::ClientOptions::new().with_allow_http(true),
                    );
                }
                for (key, value) in &config.options {
                    let k: GoogleConfigKey = key.parse().map_err(|_| unknown_option(key, "gs"))?;
                    b = b.with_config(k, value);
                }
                Arc::new(b.build().map_err(|e| build_error("gs", &e))?)
            }
            "az" | "azure" => {
                no_s3_credentials("az")?;
                let mut b = MicrosoftAzureBuilder::from_env()
                    .with_container_name(bucket()?)
                    .with_retry(store_retry());
                if let Some(endpoint) = &config.endpoint {
                    b = b.with_endpoint(endpoint.clone());
                }
                if allow_http {
                    b = b.with_allow_http(true);
                }
                for (key, value) in &config.options {
                    let k: AzureConfigKey = key.parse().map_err(|_| unknown_option(key, "az"))?;
                    b = b.with_config(k, value);
                }
                Arc::new(b.build().map_err(|e| build_error("az", &e))?)
            }
            other => {
                return Err(SinkError::Config(format!(
                    "storage url scheme {other:?} is not supported; use file, s3, gs or az"
                )));
            }
        };
        let mut description = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
        if !prefix.is_empty() {
            description.push('/');
            description.push_str(&prefix);
        }
        if let Some(endpoint) = &config.endpoint {
            description.push_str(&format!(" at {}", redact_endpoint(endpoint)));
        }
        if let Some(region) = &config.region {
            description.push_str(&format!(" ({region})"));
        }
        Ok(Arc::new(Self {
            backend: Backend::Object { store, prefix },
            description,
        }))
    }

    /// A local directory. Recordings are written into it directly (created as needed).
    pub fn local(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            description: format!("file://{}", root.display()),
            backend: Backend::Local { root },
        }
    }

    /// Any object store with multipart calls (for embedding and tests, e.g.
    /// `object_store::memory::InMemory`); keys start with `prefix`.
    pub fn with_store(
        store: Arc<dyn MultipartObjectStore>,
        prefix: &str,
        description: impl Into<String>,
    ) -> Result<Self, SinkError> {
        let prefix = prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() {
            crate::template::check_name(&prefix)
                .map_err(|why| SinkError::Config(format!("prefix {prefix:?}: {why}")))?;
        }
        Ok(Self {
            backend: Backend::Object { store, prefix },
            description: description.into(),
        })
    }

    /// What this storage is, for logs and the console: scheme, bucket, prefix,
    /// endpoint and region, never credentials.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Whether recordings are local files.
    pub fn is_local(&self) -> bool {
        matches!(self.backend, Backend::Local { .. })
    }

    /// Where an object name lands: the object key (prefix included) or the file path.
    /// This is the `object` of recording events.
    pub fn locate(&self, name: &str) -> String {
        match &self.backend {
            Backend::Local { root } => root.join(name).display().to_string(),
            Backend::Object { prefix, .. } if prefix.is_empty() => name.to_owned(),
            Backend::Object { prefix, .. } => format!("{prefix}/{name}"),
        }
    }

    /// Reads a whole stored object back, by the location [`Storage::locate`] (and the
    /// recording events) give. For tests, tools and the console's downloads of
    /// reasonably sized segments.
    pub async fn read(&self, object: &str) -> Result<Bytes, SinkError> {
        match &self.backend {
            Backend::Local { .. } => {
                tokio::fs::read(object)
                    .await
                    .map(Bytes::from)
                    .map_err(|source| SinkError::Io {
                        op: "read",
                        path: object.to_owned(),
                        source,
                    })
            }
            Backend::Object { store, .. } => {
                let path = object_path(object)?;
                let storage_error = |source| SinkError::Storage {
                    op: "read".into(),
                    object: object.to_owned(),
                    source,
                };
                let got = store
                    .get_opts(&path, GetOptions::default())
                    .await
                    .map_err(storage_error)?;
                got.bytes().await.map_err(storage_error)
            }
        }
    }

    /// Lists the objects under this storage's prefix (or the files under its
    /// directory): locations and sizes, sorted by location.
    pub async fn list(&self) -> Result<Vec<(String, u64)>, SinkError> {
        let mut out = match &self.backend {
            Backend::Local { root } => {
                let root = root.clone();
                tokio::task::spawn_blocking(move || list_dir(&root))
                    .await
                    .map_err(|e| SinkError::Unsupported(format!("listing task failed: {e}")))??
            }
            Backend::Object { store, prefix } => {
                use futures_util::TryStreamExt;
                let prefix_path = (!prefix.is_empty()).then(|| ObjectPath::from(prefix.as_str()));
                store
                    .list(prefix_path.as_ref())
                    .map_ok(|meta| (meta.location.to_string(), meta.size))
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|source| SinkError::Storage {
                        op: "list".into(),
                        object: prefix.clone(),
                        source,
                    })?
            }
        };
        out.sort();
        Ok(out)
    }
}

/// An object key as `object_store` wants it (validated: no empty or `..` segments).
pub(crate) fn object_path(key: &str) -> Result<ObjectPath, SinkError> {
    ObjectPath::parse(key).map_err(|e| SinkError::Template(format!("object key {key:?}: {e}")))
}

fn list_dir(root: &FsPath) -> Result<Vec<(String, u64)>, SinkError> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(SinkError::Io {
                    op: "list",
                    path: dir.display().to_string(),
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                out.push((entry.path().display().to_string(), meta.len()));
            }
        }
    }
    Ok(out)
}

fn unknown_option(key: &str, scheme: &str) -> SinkError {
    SinkError::Config(format!(
        "option {key:?} is not a known {scheme}:// storage option"
    ))
}

/// A builder error. `object_store` builder errors name missing or invalid settings,
/// not their values.
fn build_error(scheme: &str, e: &object_store::Error) -> SinkError {
    SinkError::Config(format!("{scheme}:// storage: {e}"))
}

/// An endpoint URL without user info, query or fragment.
fn redact_endpoint(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(mut u) => {
            let had_user = !u.username().is_empty() || u.password().is_some();
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            let mut s = u.to_string();
            if had_user {
                s = s.replacen("://", "://***@", 1);
            }
            s.trim_end_matches('/').to_owned()
        }
        Err(_) => "<unparsable url>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> StorageConfig {
        StorageConfig {
            url: url.into(),
            ..StorageConfig::default()
        }
    }

    #[test]
    fn s3_with_endpoint_and_secrets_never_shows_them() {
        let c = StorageConfig {
            endpoint: Some("http://user:pw@127.0.0.1:9900/?x=y".into()),
            region: Some("eu-west-1".into()),
            access_key_id: Some(Secret::new("AKIDSECRET")),
            secret_access_key: Some(Secret::new("verysecret")),
            session_token: Some(Secret::new("tok")),
            ..cfg("s3://studio-archive/recordings/")
        };
        let s = Storage::from_config(&c).unwrap();
        assert_eq!(
            s.describe(),
            "s3://studio-archive/recordings at http://***@127.0.0.1:9900 (eu-west-1)"
        );
        assert_eq!(s.locate("live/a/1.ts"), "recordings/live/a/1.ts");
        for text in [format!("{s:?}"), format!("{c:?}"), s.describe().to_owned()] {
            for secret in ["AKIDSECRET", "verysecret", "tok\"", "pw", "x=y"] {
                assert!(!text.contains(secret), "{text}");
            }
        }
    }

    #[test]
    fn file_urls() {
        let s = Storage::from_config(&cfg("file:///var/lib/cthulhu/rec")).unwrap();
        assert!(s.is_local());
        assert_eq!(s.locate("a/b.ts"), "/var/lib/cthulhu/rec/a/b.ts");
        assert!(Storage::from_config(&cfg("file://host/x")).is_err());
        assert!(Storage::from_config(&cfg("file:///x/../y")).is_ok()); // normalised by the URL parser
    }

    #[test]
    fn bad_configs_are_errors() {
        for (c, why) in [
            (cfg("ftp://x/y"), "not supported"),
            (cfg("s3:///prefix"), "no bucket"),
            (cfg("not a url"), "storage url"),
            (
                StorageConfig {
                    options: [("no_such_option".to_owned(), "v".to_owned())].into(),
                    ..cfg("s3://b")
                },
                "no_such_option",
            ),
            (
                StorageConfig {
                    access_key_id: Some(Secret::new("k")),
                    ..cfg("gs://b")
                },
                "S3 settings",
            ),
            (
                StorageConfig {
                    endpoint: Some("http://x".into()),
                    ..cfg("file:///tmp/x")
                },
                "do not apply",
            ),
        ] {
            let err = Storage::from_config(&c).unwrap_err().to_string();
            assert!(err.contains(why), "{c:?}: {err}");
        }
    }

    #[test]
    fn s3_options_and_env_free_credentials() {
        let c = StorageConfig {
            endpoint: Some("https://acct.r2.cloudflarestorage.com".into()),
            region: Some("auto".into()),
            options: [("timeout".to_owned(), "5s".to_owned())].into(),
            ..cfg("s3://bucket")
        };
        let s = Storage::from_config(&c).unwrap();
        assert_eq!(s.locate("x.ts"), "x.ts");
        let az = StorageConfig {
            options: [
                ("azure_storage_account_name".to_owned(), "acct".to_owned()),
                ("azure_storage_account_key".to_owned(), "a2V5".to_owned()),
            ]
            .into(),
            ..cfg("az://container/rec")
        };
        assert_eq!(
            Storage::from_config(&az).unwrap().describe(),
            "az://container/rec"
        );
    }
}
