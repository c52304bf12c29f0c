/*
 * codec.h - protobuf-c messages to and from gRPC byte buffers.  Thread-safe.
 */
#ifndef RPC_CODEC_H
#define RPC_CODEC_H

#include <grpc/byte_buffer.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/* Packs msg into a new byte buffer; the caller owns it (grpc_byte_buffer_destroy).
 * Returns NULL when memory is exhausted. */
grpc_byte_buffer *rpc_codec_encode(const ProtobufCMessage *msg);

/* Copies len raw bytes into a new byte buffer; the caller owns it. */
grpc_byte_buffer *rpc_codec_encode_raw(const void *data, size_t len);

/* Unpacks bb as desc.  Returns the message (caller frees with
 * protobuf_c_message_free_unpacked(msg, NULL)) or NULL when the bytes do not decode.
 * bb stays the caller's. */
ProtobufCMessage *rpc_codec_decode(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb);

/* A deep copy of msg (for keeping a message the library frees when its callback
 * returns).  The caller frees it with protobuf_c_message_free_unpacked(copy, NULL).
 * Returns NULL when memory is exhausted. */
ProtobufCMessage *rpc_codec_copy(const ProtobufCMessage *msg);

#endif
