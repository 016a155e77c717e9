-- target: base.licence
-- sources: identity_card, degree_certificate, marriage_registration, business_licence, birth_certificate, nurse_registration
-- Electronic licence library (电子证照库): one row per licence and holder: type, holder (a
-- resident ID or a USCC), number, issuer, valid from / to, and the resource it came from.
DROP TABLE IF EXISTS base.licence;

CREATE TABLE base.licence AS
SELECT '居民身份证' AS licence_type, 'resident_id' AS holder_kind, resident_id AS holder_id,
       resident_id AS licence_no, issuing_authority AS issuer, valid_from, valid_to, 'RK-GA-0002' AS src_resource
FROM ods.identity_card
UNION ALL
SELECT '学历学位证书', 'resident_id', resident_id, cert_no, school, graduation_date, NULL, 'RK-JY-0001'
FROM ods.degree_certificate
UNION ALL
SELECT CASE reg_type WHEN '离婚' THEN '离婚证' ELSE '结婚证' END, 'resident_id', male_id, cert_no, reg_office,
       reg_date, NULL, 'RK-MZ-0001'
FROM ods.marriage_registration
UNION ALL
SELECT CASE reg_type WHEN '离婚' THEN '离婚证' ELSE '结婚证' END, 'resident_id', female_id, cert_no, reg_office,
       reg_date, NULL, 'RK-MZ-0001'
FROM ods.marriage_registration
UNION ALL
SELECT '营业执照', 'uscc', uscc, licence_no, issuing_authority, valid_from, valid_until, 'FR-SC-0002'
FROM ods.business_licence
UNION ALL
SELECT '出生医学证明', 'resident_id', mother_id, cert_no, hospital, issue_date, NULL, 'RK-WJ-0001'
FROM ods.birth_certificate
UNION ALL
SELECT '护士执业证书', 'resident_id', resident_id, cert_no, institution, first_reg_date, valid_until, 'RK-WJ-0002'
FROM ods.nurse_registration;
