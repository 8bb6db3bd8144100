/* RTS PDUs exactly as Impacket's rpch module (code we did not write) sends
 * them, with the cookies 00..0f (virtual connection), 10..1f (channel) and
 * 20..2f (association group): the reference bytes of test_rts, test_rpch_vc
 * and test_rpch.  Hex, for t_unhex (testlib.h). */
#ifndef MP_TEST_RTS_VECTORS_H
#define MP_TEST_RTS_VECTORS_H
static const char *const IMPACKET_A1 =
    "05001403100000004c0000000000000000000400060000000100000003000000000102030405060708090a0b0c0d"
    "0e0f03000000101112131415161718191a1b1c1d1e1f0000000000000100";
static const char *const IMPACKET_B1 =
    "0500140310000000680000000000000000000600060000000100000003000000000102030405060708090a0b0c0d"
    "0e0f03000000101112131415161718191a1b1c1d1e1f040000000000004005000000e09304000c00000020212223"
    "2425262728292a2b2c2d2e2f";
#endif
