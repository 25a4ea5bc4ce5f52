/*
 * CPKCS11: the one C entry point to a PKCS#11 module (an HSM's or a cloud KMS's library) for
 * ProfileVault's key custody (Sources/VaultCrypto/PKCS11.swift).
 *
 * The module is loaded at run time (dlopen + C_GetFunctionList): nothing links against it, and
 * a build without an HSM runs unchanged. Types and constants come from the standard pkcs11.h as
 * p11-kit ships it (Debian: libp11-kit-dev, /usr/include/p11-kit-1/p11-kit/pkcs11.h; the
 * package's pkg-config name p11-kit-1 adds that include directory). Only VaultCrypto imports
 * this module. Every helper returns the module's CK_RV (CKR_OK = 0) or, for the loader, the
 * codes below; the Swift side checks each one.
 */
#ifndef PROFILEVAULT_CPKCS11_SHIM_H
#define PROFILEVAULT_CPKCS11_SHIM_H

#include <stddef.h>
#include <string.h>
#include <dlfcn.h>

#if __has_include(<p11-kit/pkcs11.h>)
#include <p11-kit/pkcs11.h>
#elif __has_include(<p11-kit-1/p11-kit/pkcs11.h>)
#include <p11-kit-1/p11-kit/pkcs11.h>
#else
#error "pkcs11.h not found: install libp11-kit-dev (Debian/Ubuntu) or p11-kit-devel"
#endif

/* ---- Loading ------------------------------------------------------------------------- */

enum { PV_P11_LOADED = 0, PV_P11_DLOPEN_FAILED = 1, PV_P11_NO_SYMBOL = 2, PV_P11_GETLIST_FAILED = 3 };

/* dlopen(path) and C_GetFunctionList. On failure `message` holds dlerror()'s text (which names
 * the file, never a secret). The handle is never closed: modules commonly keep threads or
 * atexit handlers that outlive dlclose. */
static inline int pv_p11_load(const char *path, CK_FUNCTION_LIST_PTR *list, char *message, size_t message_len) {
    if (message_len > 0) message[0] = 0;
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        const char *e = dlerror();
        if (e && message_len > 0) { strncpy(message, e, message_len - 1); message[message_len - 1] = 0; }
        return PV_P11_DLOPEN_FAILED;
    }
    CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(handle, "C_GetFunctionList");
    if (get == NULL) return PV_P11_NO_SYMBOL;
    CK_FUNCTION_LIST_PTR l = NULL;
    if (get(&l) != CKR_OK || l == NULL) return PV_P11_GETLIST_FAILED;
    *list = l;
    return PV_P11_LOADED;
}

/* ---- Calls through the function list ------------------------------------------------------ */

static inline CK_RV pv_p11_initialize(CK_FUNCTION_LIST_PTR f) {
    CK_C_INITIALIZE_ARGS args;
    memset(&args, 0, sizeof args);
    args.flags = CKF_OS_LOCKING_OK;
    return f->C_Initialize(&args);
}

static inline CK_RV pv_p11_finalize(CK_FUNCTION_LIST_PTR f) { return f->C_Finalize(NULL); }

/* Slots with a token present: `count` in, the number written (or needed) out. */
static inline CK_RV pv_p11_slots(CK_FUNCTION_LIST_PTR f, CK_SLOT_ID *slots, unsigned long *count) {
    CK_ULONG n = *count;
    CK_RV rv = f->C_GetSlotList(CK_TRUE, slots, &n);
    *count = n;
    return rv;
}

/* The token's label and serial (space padded, not NUL terminated) and flags. */
static inline CK_RV pv_p11_token(CK_FUNCTION_LIST_PTR f, CK_SLOT_ID slot, unsigned char label[32],
                                 unsigned char serial[16], unsigned long *flags) {
    CK_TOKEN_INFO info;
    memset(&info, 0, sizeof info);
    CK_RV rv = f->C_GetTokenInfo(slot, &info);
    if (rv != CKR_OK) return rv;
    memcpy(label, info.label, 32);
    memcpy(serial, info.serialNumber, 16);
    *flags = info.flags;
    return CKR_OK;
}

static inline CK_RV pv_p11_open(CK_FUNCTION_LIST_PTR f, CK_SLOT_ID slot, int read_write, CK_SESSION_HANDLE *session) {
    CK_FLAGS flags = CKF_SERIAL_SESSION | (read_write ? CKF_RW_SESSION : 0);
    return f->C_OpenSession(slot, flags, NULL, NULL, session);
}

static inline CK_RV pv_p11_close(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s) { return f->C_CloseSession(s); }

/* C_Login as the normal user; a NULL pin (protected authentication path) passes NULL, 0. */
static inline CK_RV pv_p11_login(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, const unsigned char *pin, unsigned long pin_len) {
    return f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, pin_len);
}

static inline CK_RV pv_p11_logout(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s) { return f->C_Logout(s); }

/* Up to `max` objects whose CKA_LABEL is `label` (any class when `secret_keys_only` is 0). */
static inline CK_RV pv_p11_find(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, const char *label, unsigned long label_len,
                                int secret_keys_only, CK_OBJECT_HANDLE *found, unsigned long max, unsigned long *count) {
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_ATTRIBUTE t[2];
    t[0].type = CKA_LABEL; t[0].pValue = (void *)label; t[0].ulValueLen = label_len;
    t[1].type = CKA_CLASS; t[1].pValue = &cls; t[1].ulValueLen = sizeof cls;
    CK_RV rv = f->C_FindObjectsInit(s, t, secret_keys_only ? 2 : 1);
    if (rv != CKR_OK) return rv;
    CK_ULONG n = 0;
    rv = f->C_FindObjects(s, found, max, &n);
    CK_RV rv2 = f->C_FindObjectsFinal(s);
    *count = n;
    return rv != CKR_OK ? rv : rv2;
}

/* The attributes the custody checks: class, key type, value length, and the booleans
 * sensitive, extractable, never-extractable, encrypt, decrypt. A boolean the token does not
 * report is -1; class/type/length 0xFFFFFFFF... (CK_UNAVAILABLE_INFORMATION) when unknown. */
typedef struct {
    unsigned long cls, key_type, value_len;
    int sensitive, extractable, never_extractable, encrypt, decrypt;
} pv_p11_key_facts;

static inline CK_RV pv_p11_facts(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, pv_p11_key_facts *out) {
    CK_OBJECT_CLASS cls = 0; CK_KEY_TYPE kt = 0; CK_ULONG len = 0;
    CK_BBOOL b[5] = {0, 0, 0, 0, 0};
    CK_ATTRIBUTE t[8] = {
        {CKA_CLASS, &cls, sizeof cls}, {CKA_KEY_TYPE, &kt, sizeof kt}, {CKA_VALUE_LEN, &len, sizeof len},
        {CKA_SENSITIVE, &b[0], 1}, {CKA_EXTRACTABLE, &b[1], 1}, {CKA_NEVER_EXTRACTABLE, &b[2], 1},
        {CKA_ENCRYPT, &b[3], 1}, {CKA_DECRYPT, &b[4], 1},
    };
    /* Per attribute so that one the token lacks does not hide the others. */
    for (int i = 0; i < 8; i++) {
        CK_RV rv = f->C_GetAttributeValue(s, key, &t[i], 1);
        if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE) return rv;
        if (rv != CKR_OK) t[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
    }
    out->cls = t[0].ulValueLen == CK_UNAVAILABLE_INFORMATION ? CK_UNAVAILABLE_INFORMATION : cls;
    out->key_type = t[1].ulValueLen == CK_UNAVAILABLE_INFORMATION ? CK_UNAVAILABLE_INFORMATION : kt;
    out->value_len = t[2].ulValueLen == CK_UNAVAILABLE_INFORMATION ? CK_UNAVAILABLE_INFORMATION : len;
    int *bools[5] = {&out->sensitive, &out->extractable, &out->never_extractable, &out->encrypt, &out->decrypt};
    for (int i = 0; i < 5; i++) *bools[i] = t[3 + i].ulValueLen == CK_UNAVAILABLE_INFORMATION ? -1 : (b[i] ? 1 : 0);
    return CKR_OK;
}

/* A new AES-256 token key labelled `label`: private, sensitive, extractable only when
 * `extractable` (which only the tests ask for, to check that the custody refuses it). */
static inline CK_RV pv_p11_generate_aes256(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, const char *label, unsigned long label_len,
                                           int extractable, int on_token, CK_OBJECT_HANDLE *key) {
    CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY; CK_KEY_TYPE kt = CKK_AES; CK_ULONG len = 32;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE, token = on_token ? CK_TRUE : CK_FALSE, ext = extractable ? CK_TRUE : CK_FALSE;
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, &cls, sizeof cls}, {CKA_KEY_TYPE, &kt, sizeof kt}, {CKA_VALUE_LEN, &len, sizeof len},
        {CKA_TOKEN, &token, 1}, {CKA_PRIVATE, &yes, 1}, {CKA_SENSITIVE, &yes, 1}, {CKA_EXTRACTABLE, &ext, 1},
        {CKA_ENCRYPT, &yes, 1}, {CKA_DECRYPT, &yes, 1}, {CKA_WRAP, &no, 1}, {CKA_UNWRAP, &no, 1},
        {CKA_SIGN, &no, 1}, {CKA_VERIFY, &no, 1}, {CKA_DERIVE, &no, 1},
        {CKA_LABEL, (void *)label, label_len},
    };
    return f->C_GenerateKey(s, &m, t, sizeof t / sizeof t[0], key);
}

/* A session AES key with a known value (tests only: the Wycheproof vectors through the module). */
static inline CK_RV pv_p11_import_aes(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, const unsigned char *value, unsigned long value_len,
                                      CK_OBJECT_HANDLE *key) {
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY; CK_KEY_TYPE kt = CKK_AES;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE t[] = {
        {CKA_CLASS, &cls, sizeof cls}, {CKA_KEY_TYPE, &kt, sizeof kt}, {CKA_TOKEN, &no, 1},
        {CKA_ENCRYPT, &yes, 1}, {CKA_DECRYPT, &yes, 1}, {CKA_VALUE, (void *)value, value_len},
    };
    return f->C_CreateObject(s, t, sizeof t / sizeof t[0], key);
}

static inline CK_RV pv_p11_destroy(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o) {
    return f->C_DestroyObject(s, o);
}

/* AES-GCM (CKM_AES_GCM, CK_GCM_PARAMS with pIv/ulIvLen/ulIvBits/pAAD/ulAADLen/ulTagBits) in one
 * part. `out_len` in: the capacity of `out`; out: the bytes written. Encrypt writes
 * ciphertext || tag (tag_bits / 8 bytes); decrypt takes the same and writes the plaintext only
 * when the tag verifies. */
static inline CK_RV pv_p11_gcm(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, int encrypt,
                               const unsigned char *iv, unsigned long iv_len, const unsigned char *aad, unsigned long aad_len,
                               unsigned long tag_bits, const unsigned char *in, unsigned long in_len,
                               unsigned char *out, unsigned long *out_len) {
    CK_GCM_PARAMS p;
    memset(&p, 0, sizeof p);
    p.pIv = (CK_BYTE_PTR)iv; p.ulIvLen = iv_len; p.ulIvBits = iv_len * 8;
    p.pAAD = (CK_BYTE_PTR)aad; p.ulAADLen = aad_len; p.ulTagBits = tag_bits;
    CK_MECHANISM m = {CKM_AES_GCM, &p, sizeof p};
    CK_ULONG n = *out_len;
    CK_RV rv;
    if (encrypt) {
        rv = f->C_EncryptInit(s, &m, key);
        if (rv != CKR_OK) return rv;
        rv = f->C_Encrypt(s, (CK_BYTE_PTR)in, in_len, out, &n);
    } else {
        rv = f->C_DecryptInit(s, &m, key);
        if (rv != CKR_OK) return rv;
        rv = f->C_Decrypt(s, (CK_BYTE_PTR)in, in_len, out, &n);
    }
    *out_len = n;
    return rv;
}

#endif
