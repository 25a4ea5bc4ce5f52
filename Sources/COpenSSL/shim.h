/*
 * COpenSSL: the one C entry point to OpenSSL 3 for ProfileVault.
 *
 * Only VaultCrypto imports this module. Everything OpenSSL exposes as a macro (or as an
 * OSSL_PARAM array, which Swift cannot build without string-lifetime gymnastics) is wrapped
 * here in a small `static inline` helper prefixed `pv_`. Helpers return OpenSSL's own
 * convention (1 = success, <= 0 = failure) so the Swift side checks every return code and
 * reads the reason from ERR_get_error().
 */
#ifndef PROFILEVAULT_COPENSSL_SHIM_H
#define PROFILEVAULT_COPENSSL_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <openssl/opensslv.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#if OPENSSL_VERSION_NUMBER < 0x30000000L
#error "ProfileVault needs OpenSSL 3.0 or later (EVP_MAC / EVP_KDF)"
#endif

/* ---- AES-GCM (EVP_CIPHER_CTX_ctrl constants are macros) ---------------------------- */

static inline int pv_gcm_set_ivlen(EVP_CIPHER_CTX *ctx, int ivlen) {
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, ivlen, NULL);
}

static inline int pv_gcm_get_tag(EVP_CIPHER_CTX *ctx, unsigned char *tag, int taglen) {
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, taglen, tag);
}

static inline int pv_gcm_set_tag(EVP_CIPHER_CTX *ctx, const unsigned char *tag, int taglen) {
    /* OpenSSL copies the tag; the cast only drops const for the legacy ctrl signature. */
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, taglen, (void *)tag);
}

/* ---- HMAC-SHA256 through EVP_MAC ---------------------------------------------------- */

/* Keys the MAC context with `key` and digest SHA-256. `key` must not be NULL even when
 * keylen is 0 (a NULL key means "re-initialise with the previous key" to OpenSSL). */
static inline int pv_hmac_sha256_init(EVP_MAC_CTX *ctx, const unsigned char *key, size_t keylen) {
    OSSL_PARAM params[2];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    return EVP_MAC_init(ctx, key, keylen, params);
}

/* Re-initialises a keyed MAC context for a new message, keeping the key (cheap: reuses the
 * precomputed inner/outer pad state). */
static inline int pv_hmac_reinit(EVP_MAC_CTX *ctx) {
    return EVP_MAC_init(ctx, NULL, 0, NULL);
}

/* ---- HKDF-SHA256 through EVP_KDF ---------------------------------------------------- */

static inline int pv_hkdf_sha256(EVP_KDF_CTX *kctx,
                                 const unsigned char *ikm, size_t ikmlen,
                                 const unsigned char *salt, size_t saltlen,
                                 const unsigned char *info, size_t infolen,
                                 unsigned char *out, size_t outlen) {
    static unsigned char empty[1] = { 0 };
    OSSL_PARAM params[5];
    size_t n = 0;
    params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                                    (void *)(ikm != NULL ? ikm : empty), ikmlen);
    if (saltlen > 0)
        params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen);
    if (infolen > 0)
        params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, infolen);
    params[n] = OSSL_PARAM_construct_end();
    return EVP_KDF_derive(kctx, out, outlen, params);
}

/* ---- Ed25519 / PEM ---------------------------------------------------------------- */

static inline int pv_evp_pkey_ed25519(void) { return EVP_PKEY_ED25519; }

/* BIO_get_mem_data is a macro. Returns the number of bytes, sets *data. */
static inline long pv_bio_get_mem_data(BIO *bio, char **data) {
    return BIO_get_mem_data(bio, data);
}

/* ---- Errors ------------------------------------------------------------------------ */

/* Pops the earliest queued error into `buf` (NUL-terminated) and clears the rest of the
 * thread's queue. Returns the packed error code (0 when the queue was empty). */
static inline unsigned long pv_err_pop_string(char *buf, size_t len) {
    unsigned long code = ERR_get_error();
    if (len > 0) buf[0] = 0;
    if (code != 0 && len > 0) ERR_error_string_n(code, buf, len);
    ERR_clear_error();
    return code;
}

#endif /* PROFILEVAULT_COPENSSL_SHIM_H */
