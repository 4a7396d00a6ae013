// OpenSSL objects owned by unique_ptr, for the ingest server's TLS; private
// to its sources.
#pragma once

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>

namespace krait::test::ingest {

struct SslDeleter {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
  void operator()(X509* x509) const { X509_free(x509); }
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
  void operator()(BIO* bio) const { BIO_free(bio); }
  void operator()(X509_EXTENSION* ext) const { X509_EXTENSION_free(ext); }
};
template <typename T>
using Ssl = std::unique_ptr<T, SslDeleter>;

// The oldest error of this thread's OpenSSL error queue, as text.
std::string openssl_error();

}  // namespace krait::test::ingest
