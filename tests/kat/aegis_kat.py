# Known answers for SealedDataFrameTests.Aegis*_seals_as_libsodium_does, computed without ka-deploy:
# python3 tests/kat/aegis_kat.py (needs the libsodium 1.0.22 of the NuGet cache; restore the solution first).
import ctypes, struct
lib = ctypes.CDLL("/root/.nuget/packages/libsodium/1.0.22/runtimes/linux-x64/native/libsodium.so")
assert lib.sodium_init() >= 0
def seal(fn, key, nonce, msg, ad):
    c = ctypes.create_string_buffer(len(msg)); mac = ctypes.create_string_buffer(32); maclen = ctypes.c_ulonglong()
    r = getattr(lib, fn)(c, mac, ctypes.byref(maclen), msg, ctypes.c_ulonglong(len(msg)), ad, ctypes.c_ulonglong(len(ad)), None, nonce, key)
    assert r == 0 and maclen.value == 32
    return (c.raw + mac.raw).hex().upper()
def header(ftype, flags, length, offset):
    return struct.pack("<IBBBBiqQI", 0x4644444B, ftype, 3, flags, 0, length, offset, 0, 0)
key = bytes(range(32)); msg = b"ka-deploy aegis!"
for ftype, off in [(1, 0), (1, 0x12345678), (2, 0x12345678)]:
    n = off | (1 << 63 if ftype != 1 else 0)
    nonce = struct.pack("<IQ", 7, n) + bytes(20)
    print("aegis256", ftype, hex(off), seal("crypto_aead_aegis256_encrypt_detached", key, nonce, msg, header(ftype, 1 | 2, 48, off)))
nonce = struct.pack("<IQ", 7, 0x12345678) + bytes(4)
print("aegis128l", seal("crypto_aead_aegis128l_encrypt_detached", key[:16], nonce, msg, header(1, 1 | 4, 48, 0x12345678)))
