/*
 * test_codec.c - protobuf-c messages to and from gRPC byte buffers (libs/rpc/codec.c).
 */
#include "echo.pb-c.h"
#include "rpc/codec.h"

#include <criterion/criterion.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void setup(void)
{
    grpc_init();
}

static void teardown(void)
{
    grpc_shutdown();
}

TestSuite(codec, .init = setup, .fini = teardown);

typedef Llmserve__Test__EchoRequest req_t;
typedef Llmserve__Test__EchoReply reply_t;

static req_t *decode_req(grpc_byte_buffer *bb)
{
    return (req_t *)rpc_codec_decode(&llmserve__test__echo_request__descriptor, bb);
}

static reply_t *decode_reply(grpc_byte_buffer *bb)
{
    return (reply_t *)rpc_codec_decode(&llmserve__test__echo_reply__descriptor, bb);
}

/* Packs msg with protobuf-c directly; caller frees. */
static uint8_t *pack(const ProtobufCMessage *msg, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(*len ? *len : 1);
    cr_assert_not_null(buf);
    cr_assert_eq(protobuf_c_message_pack(msg, buf), *len);
    return buf;
}

/* Copies everything in bb into a malloc'd buffer; caller frees. */
static uint8_t *flatten(grpc_byte_buffer *bb, size_t *len)
{
    grpc_byte_buffer_reader r;
    cr_assert(grpc_byte_buffer_reader_init(&r, bb));
    grpc_slice all = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    *len = GRPC_SLICE_LENGTH(all);
    uint8_t *out = malloc(*len ? *len : 1);
    cr_assert_not_null(out);
    if (*len)
        memcpy(out, GRPC_SLICE_START_PTR(all), *len);
    grpc_slice_unref(all);
    return out;
}

static void fill_request(req_t *req)
{
    llmserve__test__echo_request__init(req);
    req->text = "hello, codec \xe2\x9c\x93";
    req->repeat = 3;
    req->sleep_ms = 17;
    req->interval_us = -5;
    req->payload_bytes = 1 << 20;
    req->fail_code = 14;
    req->seq = UINT64_C(0xfedcba9876543210);
}

static void assert_request_eq(const req_t *got, const req_t *want)
{
    cr_assert_not_null(got);
    cr_assert_str_eq(got->text, want->text);
    cr_assert_eq(got->repeat, want->repeat);
    cr_assert_eq(got->sleep_ms, want->sleep_ms);
    cr_assert_eq(got->interval_us, want->interval_us);
    cr_assert_eq(got->payload_bytes, want->payload_bytes);
    cr_assert_eq(got->fail_code, want->fail_code);
    cr_assert_eq(got->seq, want->seq, "seq %llx", (unsigned long long)got->seq);
}

/* ---- round trips ---------------------------------------------------------------- */

Test(codec, request_round_trip)
{
    req_t req;
    fill_request(&req);
    grpc_byte_buffer *bb = rpc_codec_encode(&req.base);
    cr_assert_not_null(bb);
    cr_assert_eq(grpc_byte_buffer_length(bb), protobuf_c_message_get_packed_size(&req.base));

    req_t *got = decode_req(bb);
    assert_request_eq(got, &req);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    grpc_byte_buffer_destroy(bb);
}

Test(codec, encode_produces_protobuf_wire_bytes)
{
    req_t req;
    fill_request(&req);
    size_t want_len = 0;
    uint8_t *want = pack(&req.base, &want_len);
    grpc_byte_buffer *bb = rpc_codec_encode(&req.base);
    size_t got_len = 0;
    uint8_t *got = flatten(bb, &got_len);
    cr_assert_eq(got_len, want_len);
    cr_assert_arr_eq(got, want, want_len);
    free(got);
    free(want);
    grpc_byte_buffer_destroy(bb);
}

Test(codec, reply_with_binary_payload_round_trip)
{
    uint8_t payload[300];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 37); /* includes 0x00 and 0xff */
    reply_t rep;
    llmserve__test__echo_reply__init(&rep);
    rep.text = "reply";
    rep.seq = 7;
    rep.index = 2;
    rep.remaining_us = -1;
    rep.metadata = "x-echo=1;";
    rep.payload.data = payload;
    rep.payload.len = sizeof(payload);

    grpc_byte_buffer *bb = rpc_codec_encode(&rep.base);
    cr_assert_not_null(bb);
    reply_t *got = decode_reply(bb);
    cr_assert_not_null(got);
    cr_assert_str_eq(got->text, "reply");
    cr_assert_eq(got->seq, 7);
    cr_assert_eq(got->index, 2);
    cr_assert_eq(got->remaining_us, -1);
    cr_assert_str_eq(got->metadata, "x-echo=1;");
    cr_assert_eq(got->payload.len, sizeof(payload));
    cr_assert_arr_eq(got->payload.data, payload, sizeof(payload));
    protobuf_c_message_free_unpacked(&got->base, NULL);
    grpc_byte_buffer_destroy(bb);
}

Test(codec, decoded_message_outlives_the_buffer)
{
    req_t req;
    fill_request(&req);
    grpc_byte_buffer *bb = rpc_codec_encode(&req.base);
    req_t *got = decode_req(bb);
    grpc_byte_buffer_destroy(bb);
    assert_request_eq(got, &req);
    protobuf_c_message_free_unpacked(&got->base, NULL);
}

Test(codec, copy_is_deep_and_outlives_the_original)
{
    req_t req;
    fill_request(&req);
    grpc_byte_buffer *bb = rpc_codec_encode(&req.base);
    req_t *orig = decode_req(bb);
    grpc_byte_buffer_destroy(bb);
    req_t *copy = (req_t *)rpc_codec_copy(&orig->base);
    cr_assert_not_null(copy);
    cr_assert_neq(copy, orig);
    protobuf_c_message_free_unpacked(&orig->base, NULL); /* the copy shares nothing */
    assert_request_eq(copy, &req);
    protobuf_c_message_free_unpacked(&copy->base, NULL);
}

Test(codec, buffer_can_be_decoded_twice)
{
    /* bb stays the caller's and is not consumed by a decode. */
    req_t req;
    fill_request(&req);
    grpc_byte_buffer *bb = rpc_codec_encode(&req.base);
    for (int i = 0; i < 2; i++) {
        req_t *got = decode_req(bb);
        assert_request_eq(got, &req);
        protobuf_c_message_free_unpacked(&got->base, NULL);
    }
    grpc_byte_buffer_destroy(bb);
}

Test(codec, default_message_encodes_empty_and_decodes_default)
{
    req_t req = LLMSERVE__TEST__ECHO_REQUEST__INIT;
    grpc_byte_buffer *bb = rpc_codec_encode(&req.base);
    cr_assert_not_null(bb);
    cr_assert_eq(grpc_byte_buffer_length(bb), 0);
    req_t *got = decode_req(bb);
    cr_assert_not_null(got);
    cr_assert_str_eq(got->text, "");
    cr_assert_eq(got->seq, 0);
    cr_assert_eq(got->repeat, 0);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    grpc_byte_buffer_destroy(bb);
}

/* ---- raw bytes ------------------------------------------------------------------ */

Test(codec, empty_raw_buffer_decodes_to_default_message)
{
    grpc_byte_buffer *bb = rpc_codec_encode_raw("", 0);
    cr_assert_not_null(bb);
    cr_assert_eq(grpc_byte_buffer_length(bb), 0);
    reply_t *got = decode_reply(bb);
    cr_assert_not_null(got);
    cr_assert_str_eq(got->text, "");
    cr_assert_str_eq(got->metadata, "");
    cr_assert_eq(got->seq, 0);
    cr_assert_eq(got->index, 0);
    cr_assert_eq(got->remaining_us, 0);
    cr_assert_eq(got->payload.len, 0);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    grpc_byte_buffer_destroy(bb);
}

Test(codec, encode_raw_copies_the_bytes)
{
    req_t req;
    fill_request(&req);
    size_t len = 0;
    uint8_t *bytes = pack(&req.base, &len);
    grpc_byte_buffer *bb = rpc_codec_encode_raw(bytes, len);
    cr_assert_not_null(bb);
    cr_assert_eq(grpc_byte_buffer_length(bb), len);
    memset(bytes, 0xff, len); /* would not decode if bb still pointed here */
    free(bytes);
    req_t *got = decode_req(bb);
    assert_request_eq(got, &req);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    grpc_byte_buffer_destroy(bb);
}

Test(codec, garbage_bytes_do_not_decode)
{
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    grpc_byte_buffer *bb = rpc_codec_encode_raw(garbage, sizeof(garbage));
    cr_assert_not_null(bb);
    cr_assert_null(decode_req(bb));
    cr_assert_null(decode_reply(bb));
    grpc_byte_buffer_destroy(bb);
}

Test(codec, malformed_inputs_do_not_decode)
{
    static const struct {
        const char *what;
        uint8_t bytes[16];
        size_t len;
    } bad[] = {
        {"string longer than the buffer", {0x0a, 0x05, 'a', 'b'}, 4},
        {"length varint cut off", {0x0a, 0x80}, 2},
        {"value varint cut off", {0x38, 0xff, 0xff}, 3},
        {"varint longer than 10 bytes",
         {0x38, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
         12},
        {"field number 0", {0x00, 0x01}, 2},
        {"wire type 7", {0x0f}, 1},
        {"tag only", {0x0a}, 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        grpc_byte_buffer *bb = rpc_codec_encode_raw(bad[i].bytes, bad[i].len);
        req_t *got = decode_req(bb);
        cr_expect_null(got, "decoded: %s", bad[i].what);
        if (got)
            protobuf_c_message_free_unpacked(&got->base, NULL);
        grpc_byte_buffer_destroy(bb);
    }
}

Test(codec, every_truncation_of_a_message_fails_or_is_a_prefix)
{
    /* Cutting a packed message short never crashes; cuts inside a field fail. */
    req_t req;
    fill_request(&req);
    size_t len = 0;
    uint8_t *bytes = pack(&req.base, &len);
    int failed = 0;
    for (size_t cut = 0; cut < len; cut++) {
        grpc_byte_buffer *bb = rpc_codec_encode_raw(bytes, cut);
        req_t *got = decode_req(bb);
        if (got)
            protobuf_c_message_free_unpacked(&got->base, NULL);
        else
            failed++;
        grpc_byte_buffer_destroy(bb);
    }
    /* 7 fields end at 7 cut points (cut 0 included); every other cut is inside a field. */
    cr_assert_eq(failed, (int)len - 7, "len %zu, %d cuts failed", len, failed);
    free(bytes);
}

Test(codec, unknown_fields_are_skipped)
{
    /* Field 15 (varint) and field 16 (length-delimited) are not in EchoRequest. */
    static const uint8_t bytes[] = {0x78, 0x05, 0x82, 0x01, 0x02, 'h', 'i', 0x38, 0x2a};
    grpc_byte_buffer *bb = rpc_codec_encode_raw(bytes, sizeof(bytes));
    req_t *got = decode_req(bb);
    cr_assert_not_null(got);
    cr_assert_eq(got->seq, 42);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    grpc_byte_buffer_destroy(bb);
}

Test(codec, decode_null_buffer_is_null)
{
    cr_assert_null(decode_req(NULL));
    cr_assert_null(decode_reply(NULL));
}

/* ---- multi-slice buffers -------------------------------------------------------- */

Test(codec, two_slice_buffer_decodes_at_every_split)
{
    req_t req;
    fill_request(&req);
    size_t len = 0;
    uint8_t *bytes = pack(&req.base, &len);
    cr_assert_gt(len, 10);
    for (size_t split = 0; split <= len; split++) {
        grpc_slice parts[2] = {
            grpc_slice_from_copied_buffer((const char *)bytes, split),
            grpc_slice_from_copied_buffer((const char *)bytes + split, len - split),
        };
        grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(parts, 2);
        grpc_slice_unref(parts[0]);
        grpc_slice_unref(parts[1]);
        cr_assert_not_null(bb);
        cr_assert_eq(grpc_byte_buffer_length(bb), len, "split %zu", split);
        req_t *got = decode_req(bb);
        cr_assert_not_null(got, "split %zu did not decode", split);
        assert_request_eq(got, &req);
        protobuf_c_message_free_unpacked(&got->base, NULL);
        grpc_byte_buffer_destroy(bb);
    }
    free(bytes);
}

Test(codec, many_slice_buffer_decodes)
{
    uint8_t payload[5000];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i ^ (i >> 8));
    reply_t rep;
    llmserve__test__echo_reply__init(&rep);
    rep.text = "sliced";
    rep.payload.data = payload;
    rep.payload.len = sizeof(payload);
    size_t len = 0;
    uint8_t *bytes = pack(&rep.base, &len);

    /* One slice per byte for the first 64 bytes, then 997-byte slices. */
    grpc_slice slices[128];
    size_t n = 0, off = 0;
    while (off < len) {
        size_t step = off < 64 ? 1 : 997;
        if (step > len - off)
            step = len - off;
        cr_assert_lt(n, sizeof(slices) / sizeof(slices[0]));
        slices[n++] = grpc_slice_from_copied_buffer((const char *)bytes + off, step);
        off += step;
    }
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(slices, n);
    for (size_t i = 0; i < n; i++)
        grpc_slice_unref(slices[i]);

    reply_t *got = decode_reply(bb);
    cr_assert_not_null(got);
    cr_assert_str_eq(got->text, "sliced");
    cr_assert_eq(got->payload.len, sizeof(payload));
    cr_assert_arr_eq(got->payload.data, payload, sizeof(payload));
    protobuf_c_message_free_unpacked(&got->base, NULL);
    grpc_byte_buffer_destroy(bb);
    free(bytes);
}
