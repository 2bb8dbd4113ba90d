// The service the tutorial's Calculator extends (pktbeat's own IDL for the
// methods the Thrift tutorial captures use; written for the tests).

namespace py shared

struct SharedStruct {
  1: i32 key
  2: string value
}

service SharedService {
  SharedStruct getStruct(1: i32 key)
}
