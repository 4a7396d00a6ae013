#include "support/ingest_tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <unistd.h>

#include "support/ingest_server.h"

namespace krait::test {
namespace ingest {

std::string openssl_error() {
  const unsigned long code = ERR_get_error();
  if (code == 0)
    return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof buf);
  return buf;
}

}  // namespace ingest

using ingest::openssl_error;
using ingest::Ssl;

Result<TestCertificate> make_test_certificate() {
  Ssl<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!key)
    return make_error("generating a test key: {}", openssl_error());
  Ssl<X509> cert(X509_new());
  if (!cert)
    return make_error("X509_new: {}", openssl_error());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), static_cast<long>(::getpid()) + 1);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("krait test server"), -1, -1,
                             0);
  X509_set_issuer_name(cert.get(), name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
  const std::pair<int, const char*> extensions[] = {
      {NID_basic_constraints, "critical,CA:TRUE"},
      {NID_key_usage, "critical,digitalSignature,keyCertSign"},
      {NID_subject_key_identifier, "hash"},
      {NID_authority_key_identifier, "keyid:always"},
      {NID_subject_alt_name, "IP:127.0.0.1"},
  };
  for (const auto& [nid, value] : extensions) {
    Ssl<X509_EXTENSION> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
    if (!ext || X509_add_ext(cert.get(), ext.get(), -1) != 1)
      return make_error("adding certificate extension {}: {}", value, openssl_error());
  }
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0)
    return make_error("signing the test certificate: {}", openssl_error());
  auto to_pem = [](auto write) -> std::string {
    Ssl<BIO> bio(BIO_new(BIO_s_mem()));
    if (!bio || !write(bio.get()))
      return "";
    char* data = nullptr;
    const long size = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<size_t>(size));
  };
  TestCertificate out;
  out.cert_pem = to_pem([&](BIO* bio) { return PEM_write_bio_X509(bio, cert.get()) == 1; });
  out.key_pem = to_pem([&](BIO* bio) {
    return PEM_write_bio_PrivateKey(bio, key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
  });
  if (out.cert_pem.empty() || out.key_pem.empty())
    return make_error("writing the test certificate as PEM: {}", openssl_error());
  return out;
}

}  // namespace krait::test
