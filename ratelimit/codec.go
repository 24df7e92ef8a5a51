package ratelimit

import (
	"unicode/utf8"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Codec is the sidecar's gRPC codec: protobuf, as grpc-go's own, but a
// RateLimitRequest is decoded and a RateLimitResponse encoded by hand,
// without reflection: they are the rate-limit service's whole exchange,
// and its round trip is measured against a health check's
// (BenchmarkRLSRoundTrip). What the hand code does not handle (a
// descriptor's limit override, response metadata or quota, a field added
// later) goes to grpc-go's codec, and the two agree on everything else
// (TestCodec). Install it with grpc.ForceServerCodecV2(ratelimit.Codec{}).
type Codec struct{}

var protoCodec = encoding.GetCodecV2(grpcproto.Name)

// Name is the codec's content subtype: it stands in for "proto".
func (Codec) Name() string { return grpcproto.Name }

// Marshal encodes v.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	if resp, ok := v.(*rlsv3.RateLimitResponse); ok && resp != nil {
		if b, ok := appendResponse(nil, resp); ok {
			return mem.BufferSlice{mem.SliceBuffer(b)}, nil
		}
	}
	return protoCodec.Marshal(v)
}

// Unmarshal decodes data into v.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*rlsv3.RateLimitRequest)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	if decodeRequest(buf.ReadOnlyData(), req) {
		return nil
	}
	req.Reset()
	return protoCodec.Unmarshal(data, v)
}

// Field numbers of RateLimitRequest, RateLimitDescriptor and its Entry.
const (
	fieldDomain          protowire.Number = 1
	fieldDescriptors     protowire.Number = 2
	fieldHitsAddend      protowire.Number = 3
	fieldEntries         protowire.Number = 1
	fieldDescHitsAddend  protowire.Number = 3
	fieldIsNegativeHits  protowire.Number = 4
	fieldEntryKey        protowire.Number = 1
	fieldEntryValue      protowire.Number = 2
	fieldWrapperValue    protowire.Number = 1
	wireVarint, wireByte                  = protowire.VarintType, protowire.BytesType
)

// decodeRequest decodes b into req, which is empty, and reports whether it
// could: false for anything it does not handle, which the generic decoder
// then takes (and refuses if it is malformed).
func decodeRequest(b []byte, req *rlsv3.RateLimitRequest) bool {
	return fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) bool {
		switch {
		case num == fieldDomain && typ == wireByte:
			req.Domain = string(v)
			return utf8.Valid(v)
		case num == fieldDescriptors && typ == wireByte:
			d := &ratelimitv3.RateLimitDescriptor{}
			req.Descriptors = append(req.Descriptors, d)
			return decodeDescriptor(v, d)
		case num == fieldHitsAddend && typ == wireVarint:
			req.HitsAddend = uint32(x) //nolint:gosec // G115: a uint32 field, truncated as proto does
			return true
		}
		return false
	})
}

func decodeDescriptor(b []byte, d *ratelimitv3.RateLimitDescriptor) bool {
	return fields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) bool {
		switch {
		case num == fieldEntries && typ == wireByte:
			e := &ratelimitv3.RateLimitDescriptor_Entry{}
			d.Entries = append(d.Entries, e)
			return fields(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) bool {
				switch {
				case num == fieldEntryKey && typ == wireByte:
					e.Key = string(v)
				case num == fieldEntryValue && typ == wireByte:
					e.Value = string(v)
				default:
					return false
				}
				return utf8.Valid(v)
			})
		case num == fieldDescHitsAddend && typ == wireByte:
			if d.HitsAddend == nil { // a repeated one merges, as proto does
				d.HitsAddend = &wrapperspb.UInt64Value{}
			}
			return fields(v, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) bool {
				d.HitsAddend.Value = x
				return num == fieldWrapperValue && typ == wireVarint
			})
		case num == fieldIsNegativeHits && typ == wireVarint:
			d.IsNegativeHits = protowire.DecodeBool(x)
			return true
		}
		return false
	})
}

// fields calls f with each field of the message in b: its number and wire
// type, and its value, v for a length-delimited field or x for a varint.
// Another wire type, a malformed field or f returning false stops it, with
// false.
func fields(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64) bool) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case wireByte:
			v, n = protowire.ConsumeBytes(b)
		case wireVarint:
			x, n = protowire.ConsumeVarint(b)
		default:
			return false
		}
		if n < 0 || !f(num, typ, v, x) {
			return false
		}
		b = b[n:]
	}
	return true
}

// Field numbers of RateLimitResponse and the messages in it.
const (
	fieldOverallCode     protowire.Number = 1
	fieldStatuses        protowire.Number = 2
	fieldResponseHeaders protowire.Number = 3
	fieldRawBody         protowire.Number = 5
	fieldStatusCode      protowire.Number = 1
	fieldCurrentLimit    protowire.Number = 2
	fieldLimitRemaining  protowire.Number = 3
	fieldUntilReset      protowire.Number = 4
	fieldRequestsPerUnit protowire.Number = 1
	fieldUnit            protowire.Number = 2
	fieldLimitName       protowire.Number = 3
	fieldSeconds         protowire.Number = 1
	fieldNanos           protowire.Number = 2
	fieldHeaderKey       protowire.Number = 1
	fieldHeaderValue     protowire.Number = 2
)

// appendResponse appends r's encoding to b, fields in number order and
// zero values left out, as proto.Marshal writes them; false if r has what
// it does not handle, or a string that is not UTF-8 (which proto.Marshal
// refuses).
func appendResponse(b []byte, r *rlsv3.RateLimitResponse) ([]byte, bool) {
	if r.DynamicMetadata != nil || r.Quota != nil || len(r.RequestHeadersToAdd) > 0 {
		return nil, false
	}
	b = appendVarint(b, fieldOverallCode, uint64(r.OverallCode)) //nolint:gosec // G115: an enum, never negative
	var scratch [128]byte
	for _, st := range r.Statuses {
		m, ok := appendStatus(scratch[:0], st)
		if !ok {
			return nil, false
		}
		b = protowire.AppendTag(b, fieldStatuses, wireByte)
		b = protowire.AppendBytes(b, m)
	}
	for _, h := range r.ResponseHeadersToAdd {
		if h == nil || len(h.RawValue) > 0 || !utf8.ValidString(h.Key) || !utf8.ValidString(h.Value) {
			return nil, false
		}
		m := appendString(scratch[:0], fieldHeaderKey, h.Key)
		m = appendString(m, fieldHeaderValue, h.Value)
		b = protowire.AppendTag(b, fieldResponseHeaders, wireByte)
		b = protowire.AppendBytes(b, m)
	}
	if len(r.RawBody) > 0 {
		b = protowire.AppendTag(b, fieldRawBody, wireByte)
		b = protowire.AppendBytes(b, r.RawBody)
	}
	return b, true
}

func appendStatus(b []byte, st *rlsv3.RateLimitResponse_DescriptorStatus) ([]byte, bool) {
	if st == nil || st.Quota != nil {
		return nil, false
	}
	b = appendVarint(b, fieldStatusCode, uint64(st.Code)) //nolint:gosec // G115: an enum, never negative
	if l := st.CurrentLimit; l != nil {
		if l.UnitMultiplier != nil || !utf8.ValidString(l.Name) {
			return nil, false
		}
		var scratch [64]byte
		m := appendVarint(scratch[:0], fieldRequestsPerUnit, uint64(l.RequestsPerUnit))
		m = appendVarint(m, fieldUnit, uint64(l.Unit)) //nolint:gosec // G115: an enum, never negative
		m = appendString(m, fieldLimitName, l.Name)
		b = protowire.AppendTag(b, fieldCurrentLimit, wireByte)
		b = protowire.AppendBytes(b, m)
	}
	b = appendVarint(b, fieldLimitRemaining, uint64(st.LimitRemaining))
	if d := st.DurationUntilReset; d != nil {
		var scratch [24]byte
		m := appendVarint(scratch[:0], fieldSeconds, uint64(d.Seconds)) //nolint:gosec // G115: int64 as proto encodes it
		m = appendVarint(m, fieldNanos, uint64(d.Nanos))                //nolint:gosec // G115: int32 as proto encodes it
		b = protowire.AppendTag(b, fieldUntilReset, wireByte)
		b = protowire.AppendBytes(b, m)
	}
	return b, true
}

// appendVarint appends a varint field, nothing for 0.
func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, wireVarint)
	return protowire.AppendVarint(b, v)
}

// appendString appends a string field, nothing for "".
func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, wireByte)
	return protowire.AppendString(b, s)
}
