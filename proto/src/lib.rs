//! Envoy's external authorization contract, generated from the vendored `.proto` files.
//!
//! Both sides of the project depend on this crate: the authz server implements the generated
//! `Authorization` services, the gateway calls them. Message names, packages and field numbers are
//! Envoy's, so the bytes on the wire are the ones Envoy sends and expects.

pub mod codec;

/// The encoded `FileDescriptorSet` of every file here and its imports, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/extauthz_descriptor.bin"));

/// `google.rpc` types.
pub mod google {
    /// `google.rpc.Status`, carried inside a `CheckResponse`.
    pub mod rpc {
        #![allow(missing_docs, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

/// `envoy.*` packages.
pub mod envoy {
    /// `envoy.config.*`.
    pub mod config {
        /// `envoy.config.core`.
        pub mod core {
            /// `envoy.config.core.v3`: addresses, headers, metadata.
            #[rustfmt::skip]
            #[allow(missing_docs, clippy::all)]
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.config.core.v3.rs"));
            }
        }
    }

    /// `envoy.api.v2.*`, the v2 shapes used by the v2 service.
    pub mod api {
        /// `envoy.api.v2`.
        pub mod v2 {
            /// `envoy.api.v2.core`.
            #[rustfmt::skip]
            #[allow(missing_docs, clippy::all)]
            pub mod core {
                include!(concat!(env!("OUT_DIR"), "/envoy.api.v2.core.rs"));
            }
        }
    }

    /// `envoy.type`: HTTP status codes.
    #[rustfmt::skip]
    #[allow(missing_docs, clippy::all)]
    pub mod r#type {
        include!(concat!(env!("OUT_DIR"), "/envoy.r#type.rs"));

        /// `envoy.type.v3`.
        #[allow(missing_docs, clippy::all)]
        pub mod v3 {
            include!(concat!(env!("OUT_DIR"), "/envoy.r#type.v3.rs"));
        }
    }

    /// `envoy.service.*`.
    pub mod service {
        /// `envoy.service.auth`: the Authorization services.
        pub mod auth {
            /// `envoy.service.auth.v3`, the current API.
            #[rustfmt::skip]
            #[allow(missing_docs, clippy::all)]
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.service.auth.v3.rs"));
            }
            /// `envoy.service.auth.v2`, for Envoys older than the v3 API.
            #[rustfmt::skip]
            #[allow(missing_docs, clippy::all)]
            pub mod v2 {
                include!(concat!(env!("OUT_DIR"), "/envoy.service.auth.v2.rs"));
            }
        }
    }
}

/// Short paths to the types both sides use most.
pub mod v3 {
    pub use crate::envoy::config::core::v3::{
        Address, HeaderValue, HeaderValueOption, QueryParameter, SocketAddress, address,
        header_value_option::HeaderAppendAction, socket_address,
    };
    pub use crate::envoy::service::auth::v3::*;
    pub use crate::envoy::r#type::v3::{HttpStatus, StatusCode};
}

/// Short paths to the v2 types.
pub mod v2 {
    pub use crate::envoy::api::v2::core::{
        Address, HeaderValue, HeaderValueOption, SocketAddress, address, socket_address,
    };
    pub use crate::envoy::service::auth::v2::*;
    pub use crate::envoy::r#type::{HttpStatus, StatusCode};
}

pub use google::rpc::Status as RpcStatus;

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_decodes_and_holds_both_services() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        let services: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| {
                let package = f.package().to_owned();
                f.service
                    .iter()
                    .map(move |s| format!("{package}.{}", s.name()))
            })
            .collect();
        assert!(services.contains(&"envoy.service.auth.v3.Authorization".to_owned()));
        assert!(services.contains(&"envoy.service.auth.v2.Authorization".to_owned()));
        assert!(
            set.file
                .iter()
                .any(|f| f.name() == "google/protobuf/struct.proto")
        );
    }
}
