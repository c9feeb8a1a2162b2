// cluster-key-slot ships no types: the Redis Cluster slot (CRC16 mod 16384, hash tags honoured) of a key.
declare module 'cluster-key-slot' {
  function calculateSlot(key: string | Buffer): number;
  namespace calculateSlot {
    function generateMulti(keys: (string | Buffer)[]): number;
  }
  export default calculateSlot;
}
