//! A client of the coordinator's REST API over the cluster's mutual TLS (HTTP/1.1): what
//! `presagectl` and the tests call it with.

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls_pki_types::ServerName;

use crate::tls::{TlsError, TlsMaterial};

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("bad coordinator URL {0:?}: expected https://HOST:PORT")]
    Url(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot reach the coordinator at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("the HTTP exchange with the coordinator failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("the coordinator answered {status} with a body that is not JSON: {body}")]
    NotJson { status: u16, body: String },
}

/// A REST client presenting one certificate; each call opens its own connection.
#[derive(Clone)]
pub struct RestClient {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
}

/// A JSON answer and its status.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

impl RestClient {
    /// `url`: `https://HOST:PORT` of the coordinator; `server_name`: the name its certificate
    /// must carry.
    pub fn new(url: &str, material: &TlsMaterial, server_name: &str) -> Result<RestClient, RestError> {
        let rest = url.strip_prefix("https://").ok_or_else(|| RestError::Url(url.into()))?.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| RestError::Url(url.into()))?;
        let port: u16 = port.parse().map_err(|_| RestError::Url(url.into()))?;
        let server_name =
            ServerName::try_from(server_name.to_string()).map_err(|e| TlsError::Config(format!("server name {server_name:?}: {e}")))?;
        Ok(RestClient { host: host.trim_matches(['[', ']']).to_string(), port, server_name, tls: material.rest_client_config()? })
    }

    pub async fn get(&self, path: &str) -> Result<Answer, RestError> {
        self.call("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: &[u8]) -> Result<Answer, RestError> {
        self.call("POST", path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Answer, RestError> {
        self.call("DELETE", path, None).await
    }

    /// A GET whose body is returned as received (status, bytes).
    pub async fn get_raw(&self, path: &str) -> Result<(u16, Bytes), RestError> {
        self.exchange("GET", path, None).await
    }

    async fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Answer, RestError> {
        let (status, bytes) = self.exchange(method, path, body).await?;
        let body = serde_json::from_slice(&bytes)
            .map_err(|_| RestError::NotJson { status, body: String::from_utf8_lossy(&bytes).chars().take(300).collect() })?;
        Ok(Answer { status, body })
    }

    async fn exchange(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<(u16, Bytes), RestError> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| RestError::Connect { addr: addr.clone(), source })?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|source| RestError::Connect { addr: addr.clone(), source })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        let driver = tokio::spawn(conn);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        driver.abort();
        Ok((status, bytes))
    }
}
