EMSMDB_UUID = 'a4f1db00-ca47-1067-b31f-00dd010662da'
ASYNC_EMSMDB_UUID = '5261574a-4572-206e-b268-6b199213b4e4'
from rpcserver import Interface
class Emsmdb(object):
    def __init__(self, config, directory):
        pass
    def interfaces(self):
        return [Interface('emsmdb', EMSMDB_UUID, '0.81', {}), Interface('asyncemsmdb', ASYNC_EMSMDB_UUID, '0.1', {})]
