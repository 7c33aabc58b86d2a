/*
 * thinghost native extensions: the C ABI.
 *
 * A native extension is a shared library (.so, .dylib, .dll) named by `entry` in a plugin.toml
 * with `runtime = "native"`. It runs inside the server's process with all of its rights: it is
 * TRUSTED CODE, loaded only when the server is started with --allow-native. Rust authors do not
 * need this header: `thinghost_sdk::extension!` exports these symbols.
 *
 * Strings are UTF-8 byte ranges (pointer and length, not NUL-terminated). Values are JSON text,
 * as in the REST API. Output goes through a writer the caller gives: `write(sink, ptr, len)`
 * appends bytes to the caller's buffer (call it any number of times).
 *
 * The host checks thinghost_abi_version() before it calls anything else. A library is never
 * unloaded. A call that passes its deadline is abandoned (its thread keeps running). Never let a
 * panic or exception unwind out of these functions.
 */
#ifndef THINGHOST_H
#define THINGHOST_H

#include <stddef.h>
#include <stdint.h>

#define THINGHOST_ABI_VERSION 1

/* Status codes of host calls and of thinghost_call. */
#define THINGHOST_OK 0
#define THINGHOST_NOT_FOUND 1  /* the entity does not exist, or the caller cannot see it */
#define THINGHOST_DENIED 2     /* the caller lacks the permission */
#define THINGHOST_CAPABILITY 3 /* not declared in the manifest's [capabilities] */
#define THINGHOST_INVALID 4    /* a bad name, value or parameter */
#define THINGHOST_FAILED 5     /* anything else; also the status of a failed handler */

typedef void (*thinghost_write)(void *sink, const uint8_t *ptr, size_t len);

/*
 * A host call: `function` is a host function's name, `args` a JSON array of its arguments in
 * order. The answer (JSON text on THINGHOST_OK, else the error message) is written to sink.
 *
 *   get_property(thing, property)          -> value
 *   set_property(thing, property, value)   -> null
 *   invoke_service(thing, service, params) -> value (params is an object)
 *   invoke_entity_service(collection, entity, service, params) -> value
 *   list_things()                          -> array of names
 *   start_session(remote_endpoint)         -> session start (sessionId, launchUri, ...)
 *   end_session(session_id)                -> the ended session
 *   get_session(session_id)                -> a session
 *   list_sessions()                        -> array of sessions
 *   log(message)                           -> null
 *   audit(message)                         -> null
 *   caller()                               -> string
 *   me()                                   -> string
 *   fire_event(event, data)                -> null (data is an object)
 *
 * Each is made as a request of the user who called the service (see sdk/README.md).
 */
typedef int32_t (*thinghost_host_call)(const void *ctx, const uint8_t *function,
                                       size_t function_len, const uint8_t *args, size_t args_len,
                                       void *sink, thinghost_write write);

/* What the host passes on every call; valid until thinghost_call returns. */
typedef struct thinghost_host {
    uint32_t abi_version; /* THINGHOST_ABI_VERSION */
    const void *ctx;      /* pass back to call */
    thinghost_host_call call;
} thinghost_host;

/* Returns THINGHOST_ABI_VERSION. */
uint32_t thinghost_abi_version(void);

/* Writes the handlers as a JSON array: [{"name": "fill", "arity": 1}, ...]. Returns THINGHOST_OK. */
int32_t thinghost_handlers(void *sink, thinghost_write write);

/*
 * Runs the handler `name` with `args`, a JSON array of the service's parameters in declared
 * order. Writes the result as JSON text and returns THINGHOST_OK, or writes a message for the
 * caller and returns THINGHOST_FAILED. May be called on any thread, several at a time.
 */
int32_t thinghost_call(const thinghost_host *host, const uint8_t *name, size_t name_len,
                       const uint8_t *args, size_t args_len, void *sink, thinghost_write write);

#endif
